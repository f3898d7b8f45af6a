import sys, torch
from PIL import Image
from trainer.model import load_model, load_processor
for d in sys.argv[1:]:
    p = load_processor(d); m = load_model(d, dtype="float32").eval()
    b = p.image_processor(images=[Image.new("RGB", (140, 140), (90, 160, 30))], return_tensors="pt")
    with torch.no_grad():
        f = m.model.get_image_features(pixel_values=b["pixel_values"], image_grid_thw=b["image_grid_thw"])
    f = f.pooler_output if hasattr(f, "pooler_output") else f
    f = torch.cat(list(f)) if isinstance(f, (list, tuple)) else f
    print(m.config.model_type, "tokens", f.shape[0], "max |token - mean token| / |mean token|:",
          f"{((f - f.mean(0)).norm(dim=1).max() / f.mean(0).norm()).item():.2e}")
