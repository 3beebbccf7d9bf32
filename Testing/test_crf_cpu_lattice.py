"""The CPU lattice (numba kernels) filters what the PyTorch lattice filters, the dense CRF gives
the same labels on either, and its compiled code is cached even where the package folder cannot
be written (a Slicer extension installed read-only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from DeepOrganSegLib.crf import meanfield
from DeepOrganSegLib.crf.lattice_cpu import CPULattice
from DeepOrganSegLib.crf.parameters import CRFParameters
from DeepOrganSegLib.crf.permutohedral import PermutohedralLattice

ENGINE = Path(__file__).resolve().parents[1] / "DeepOrganSeg" / "DeepOrganSegLib"


@pytest.mark.parametrize("points, dim, spread", [(4000, 4, 3.0), (6000, 3, 8.0), (2000, 5, 1.0),
                                                 (3000, 1, 20.0)])
def test_filter_equals_the_pytorch_lattice(points, dim, spread):
    generator = torch.Generator().manual_seed(dim)
    features = torch.randn(points, dim, generator=generator) * spread
    values = torch.rand(points, 3, generator=generator)
    reference = PermutohedralLattice(features).filter(values)
    filtered = CPULattice(features).filter(values)
    assert filtered.shape == reference.shape and filtered.dtype == torch.float32
    torch.testing.assert_close(filtered, reference, rtol=1e-4, atol=1e-4 * float(reference.abs().max()))


def test_both_lattices_give_the_dense_crf_the_same_labels(monkeypatch):
    rng = np.random.default_rng(0)
    shape = (24, 32, 32)
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    inside = ((k - 12) / 8.0) ** 2 + ((j - 16) / 10.0) ** 2 + ((i - 15) / 9.0) ** 2 < 1
    image = torch.from_numpy((inside * 1.5 + rng.normal(0, 0.3, shape)).astype(np.float32))
    logits = torch.from_numpy(np.stack([~inside, inside]).astype(np.float32) * 2
                              + rng.normal(0, 1.5, (2,) + shape).astype(np.float32))
    probabilities = logits.softmax(0)
    params = CRFParameters()
    on_cpu_lattice = meanfield.dense_crf(probabilities, image, (2.0, 1.5, 1.5), params)
    monkeypatch.setattr(meanfield, "_lattice", PermutohedralLattice)
    on_torch_lattice = meanfield.dense_crf(probabilities, image, (2.0, 1.5, 1.5), params)
    agree = (on_cpu_lattice.argmax(0) == on_torch_lattice.argmax(0)).float().mean()
    assert float(agree) >= 0.9999
    torch.testing.assert_close(on_cpu_lattice, on_torch_lattice, rtol=0, atol=5e-3)


def test_the_dense_crf_uses_the_cpu_lattice_on_the_cpu():
    assert isinstance(meanfield._lattice(torch.zeros(10, 4)), CPULattice)


def test_compiled_code_is_cached_where_the_package_folder_cannot_be_written(tmp_path):
    """A copy of the engine whose ``crf/__pycache__`` cannot be made (a file stands in its way,
    which holds even for root, unlike permissions) caches in ``NUMBA_CACHE_DIR`` instead."""
    engine = tmp_path / "site" / "DeepOrganSegLib"
    shutil.copytree(ENGINE, engine, ignore=shutil.ignore_patterns("__pycache__"))
    (engine / "crf" / "__pycache__").write_text("not a folder")
    cache = tmp_path / "numba-cache"
    script = ("import torch; from DeepOrganSegLib.crf.lattice_cpu import CPULattice; "
              "print(float(CPULattice(torch.randn(500, 4)).filter(torch.ones(500, 2)).sum()))")
    environment = {**os.environ, "PYTHONPATH": str(engine.parent), "NUMBA_CACHE_DIR": str(cache)}
    run = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert float(run.stdout) > 0
    cached = [path.name for path in cache.rglob("*") if path.suffix in (".nbi", ".nbc")]
    assert any(name.startswith("lattice_cpu._filter") for name in cached), cached
    assert (engine / "crf" / "__pycache__").is_file()
