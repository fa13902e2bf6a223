"""The library: the public names of ``ncf``, its README example (run as it is written), and
what the README says about the code."""

from __future__ import annotations

import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import ncf

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _python(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def test_import_ncf_is_light_and_every_public_name_resolves() -> None:
    done = _python("import sys, ncf; print('numpy' in sys.modules, 'torch' in sys.modules); "
                   "[getattr(ncf, n) for n in ncf.__all__]; print(len(ncf.__all__))")
    assert done.returncode == 0, done.stderr
    light, count = done.stdout.split("\n")[:2]
    assert light == "False False" and int(count) == len(ncf.__all__) > 30
    assert set(ncf.__all__) == {*ncf._API, "DataError", "NcfError"}


def test_help_lists_every_public_name_with_one_line() -> None:
    text = pydoc.render_doc(ncf, renderer=pydoc.plaintext)
    described = dict(re.findall(r"^\s{4}(\w+)\s{2,}(\S.*)$", ncf.__doc__ or "", re.M))
    assert set(described) == set(ncf.__all__)
    assert all(name in text for name in ncf.__all__)


def test_the_package_is_typed() -> None:
    assert (Path(ncf.__file__).parent / "py.typed").is_file()
    assert 'ncf = ["py.typed"]' in (ROOT / "pyproject.toml").read_text()


def test_readme_library_example_runs(tmp_path: Path) -> None:
    block = README.split("## Library", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert 10 <= len([ln for ln in block.splitlines() if ln.strip()]) <= 16
    done = _python(block, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    scores, pop = done.stdout.strip().splitlines()
    hr = eval(scores)  # {'gmf': ..., 'mlp': ..., 'neumf': ...}
    assert set(hr) == {"gmf", "mlp", "neumf"} and min(hr.values()) > 0.2  # chance: 0.10
    assert pop.startswith("ItemPop full-ranking HR@10 0.")
    assert (tmp_path / "neumf.npz").is_file()


def test_readme_states_the_batch_rule_of_the_code() -> None:
    from ncf.cli.train import CPU_STEPS, auto_batch_size

    stated = re.search(r"unless an epoch would take more than ([\d,]+) steps", README)
    assert stated is not None and int(stated.group(1).replace(",", "")) == CPU_STEPS
    for positives in (10_000, 153_600, 153_601, 1_000_000, 10**8):
        batch = auto_batch_size(positives, 4)
        steps = positives * 5 / batch
        assert (batch == 256 and steps <= CPU_STEPS) or (
            steps <= CPU_STEPS < positives * 5 / (batch // 2)) or batch == 16384


def test_readme_says_what_constraints_pins() -> None:
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    stated = re.search(r"`constraints.txt` pins PyTorch's version \(`torch==(\S+)`\), not its "
                       r"build", README)
    assert pinned is not None and stated is not None and stated.group(1) == pinned.group(1)
    assert "pins the CPU build" not in README
