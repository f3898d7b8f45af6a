# python feature_norms_during_sft.py LR [DTYPE]: DTYPE float32 (default) or bf16 (the model cast to
# bf16 before training, no float32 master copy, as tries 1-3 trained). Writes /tmp/dg/diag-LR-DTYPE.log.
# (Generalised from the script as first run, which took LR only and trained in float32.)
import torch, time, sys
from transformers import TrainerCallback
from trainer.sft import parse_arguments, build_trainer
from trainer.model import load_processor
lr=sys.argv[1] if len(sys.argv)>1 else "1e-3"
dtype=sys.argv[2] if len(sys.argv)>2 else "float32"
argv=["--model_name_or_path","/tmp/dg/init","--data_files","/tmp/dg/data2k/train.jsonl","--image_folders","/tmp/dg/data2k/images",
      "--output_dir","/tmp/dg/out5","--per_device_train_batch_size","8","--use_cpu","true","--report_to","none",
      "--max_steps","100","--learning_rate",lr,"--lr_scheduler_type","constant","--warmup_steps","10","--logging_steps","20","--save_strategy","no",
      "--weight_decay","0.01","--dataloader_num_workers","0"]+(["--bf16","true"] if dtype=="bf16" else [])
options,args,model_args=parse_arguments(argv)
processor=load_processor(model_args.model_name_or_path, options.min_pixels, options.max_pixels)
from PIL import Image
probe_imgs=[Image.open(f'/tmp/dg/data/images/{i:06d}.png').convert('RGB') for i in range(8)]
probe=processor.image_processor(images=probe_imgs, return_tensors='pt')
class Diag(TrainerCallback):
    def on_step_end(self, a, state, control, model=None, **kw):
        if state.global_step%20: return
        m=model
        with torch.no_grad():
            f=m.model.get_image_features(pixel_values=probe['pixel_values'], image_grid_thw=probe['image_grid_thw'])
            f=f.pooler_output if hasattr(f,'pooler_output') else f
            f=torch.cat(list(f)) if isinstance(f,(list,tuple)) else f
        open(f"/tmp/dg/diag-{lr}-{dtype}.log","a").write(f"step {state.global_step} feat mean-norm {f.mean(0).norm():.3f} dev {(f-f.mean(0)).norm(dim=1).mean():.3f} text-emb norm {m.model.language_model.embed_tokens.weight.norm(dim=1).mean():.3f}"+"\n")
tr=build_trainer(options,args,model_args,processor,[Diag()])
if dtype=="bf16": tr.model.to(torch.bfloat16)
t=time.time(); tr.train(); print('secs',time.time()-t)
