import torch, time, sys, json
from transformers import TrainerCallback
from trainer.sft import parse_arguments, build_trainer, build_sft_dataset
from trainer.model import load_processor
lm_lr=float(sys.argv[1]); vis_lr=float(sys.argv[2]); steps=sys.argv[3]; tag=sys.argv[4]
argv=["--model_name_or_path","/tmp/dg/init","--data_files","/tmp/dg/data8k/train.jsonl","--image_folders","/tmp/dg/data8k/images",
      "--output_dir","/tmp/dg/out6"+tag,"--per_device_train_batch_size","8","--use_cpu","true","--report_to","none",
      "--max_steps",steps,"--learning_rate",str(lm_lr),"--lr_scheduler_type","constant","--warmup_steps","10","--logging_steps","1000","--save_strategy","no",
      "--weight_decay","0.01","--dataloader_num_workers","0"]
options,args,model_args=parse_arguments(argv)
processor=load_processor(model_args.model_name_or_path, options.min_pixels, options.max_pixels)
tr=build_trainer(options,args,model_args,processor)
# probe: 16 held-out samples of one image size, so images can be swapped between samples
from trainer.train import load_training_data, coordinates_of
import copy
o2=copy.copy(options); o2.data_files="/tmp/dg/probe/train.jsonl"; o2.image_folders="/tmp/dg/probe/images"
ex,_=load_training_data(o2, processor, coordinates_of('/tmp/dg/init'))
ex=[e for e in ex if tuple(e.resized_size)==tuple(ex[0].resized_size)][:16]
ds=build_sft_dataset(ex, options.question_template)
rows=[ds[i] for i in range(len(ex))]
batch=tr.data_collator(rows)
n=len(ex); per=batch['pixel_values'].shape[0]//n
perm=torch.roll(torch.arange(n),1)
swapped=batch['pixel_values'].view(n,per,-1)[perm].reshape(n*per,-1)
vis=[p for nme,p in tr.model.named_parameters() if 'visual' in nme]
rest=[p for nme,p in tr.model.named_parameters() if 'visual' not in nme]
groups=[{"params":rest,"lr":lm_lr}]
if vis_lr>0: groups.append({"params":vis,"lr":vis_lr})
else:
    for p in vis: p.requires_grad_(False)
tr.optimizer=torch.optim.AdamW(groups, weight_decay=0.01)
log=open(f"/tmp/dg/diag6-{tag}.log","w")
class Diag(TrainerCallback):
    def on_step_end(self, a, state, control, model=None, **kw):
        if state.global_step%100: return
        m=model; m.eval()
        with torch.no_grad():
            real=m(**batch).loss.item()
            b=dict(batch); b['pixel_values']=swapped; sw=m(**b).loss.item()
            f=m.model.get_image_features(pixel_values=batch['pixel_values'], image_grid_thw=batch['image_grid_thw'])
            f=f.pooler_output if hasattr(f,'pooler_output') else f
            f=torch.cat(list(f)) if isinstance(f,(list,tuple)) else f
        m.train()
        log.write(f"step {state.global_step} heldout loss real {real:.4f} swapped {sw:.4f} gap {sw-real:+.4f} feat mean {f.mean(0).norm():.1f} dev {(f-f.mean(0)).norm(dim=1).mean():.2f}\n"); log.flush()
tr.add_callback(Diag())
t=time.time(); tr.train(); log.write(f"secs {time.time()-t:.0f}\n")
