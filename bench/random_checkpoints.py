"""Random-initialised ViT-B/16 and EVA-X-B/16 checkpoints (timm `VisionTransformer` / `Eva`, built as
bench/vit_peers.py builds them, seed 0), saved as safetensors under timm's names — the ViT-B- and
EVA-X-B-shaped models the int8 accuracy guard was measured with (docs/benchmarks.md "int8 encoder").

Usage: python3 bench/random_checkpoints.py OUT_DIR    # torch==2.13.0+cpu, timm 1.0.31, safetensors
"""
import os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors.torch import save_file
from vit_peers import build

out = sys.argv[1] if len(sys.argv) > 1 else "."
os.makedirs(out, exist_ok=True)
for preset in ["vitBase16", "evaXBase16"]:
    model = build(preset, 224)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, f"{preset}.safetensors"))
    print(preset, os.path.join(out, f"{preset}.safetensors"))
