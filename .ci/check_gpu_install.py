"""Check that the README's GPU install line resolves: `pip install -c constraints.txt -e '.[gpu]'`.

Runs pip's resolver against the package index in dry-run mode (package metadata only) as if the
environment were empty, and checks the versions it picks: vLLM inside TRL 1.16's window, the
torchvision that pairs with torch 2.13, DeepSpeed. Exit status 0 when it resolves.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[gpu]", "--report", str(report)],
            check=True,
        )
        picked = {item["metadata"]["name"].lower(): item["metadata"]["version"]
                  for item in json.loads(report.read_text())["install"]}
    vllm, torchvision, torch = picked.get("vllm", ""), picked.get("torchvision", ""), picked.get("torch", "")
    checks = {
        "vllm in 0.28-0.30": vllm.split(".")[:2] in (["0", "28"], ["0", "29"], ["0", "30"]),
        "torchvision 0.28.*": torchvision.startswith("0.28."),
        "torch 2.13.*": torch.startswith("2.13."),
        "deepspeed": "deepspeed" in picked,
        "trl 1.16.*": picked.get("trl", "").startswith("1.16."),
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    print(f"resolved: vllm {vllm}, torchvision {torchvision}, torch {torch}, "
          f"deepspeed {picked.get('deepspeed')}, trl {picked.get('trl')}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
