"""Install sahmr.

The CPU route on a machine without a GPU: install torch first (``pip install torch==2.13.0``
takes a local CPU build on the team's machines; elsewhere use PyTorch's CPU index), then
``pip install -e .``. ``tools/install.sh`` does both, plus the Debian packages open3d needs.
torch is required here only as ``torch>=2.1`` so that an installed CPU build satisfies it and
pip never pulls the multi-gigabyte CUDA build on its own.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="sahmr",
    version="0.1.0",
    description="Scene-aware human mesh recovery: bodies recovered in the scanned room's frame",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The bundled rooms live in the top-level scenes/ folder and install as sahmr._scenes.
    packages=[*find_packages(include=["sahmr", "sahmr.*"]), "sahmr._scenes"],
    package_dir={"sahmr._scenes": "scenes"},
    package_data={
        "sahmr": ["body/assets/*.npz", "optim/assets/*.npz", "py.typed", "checkpoints/*.pt"],
        "sahmr._scenes": ["README.md", "*/*.ply", "*/*.json", "*/*.npy", "*/*.png",
                          "*/demo/*.jpg", "*/demo/*.json", "*/demo/*.npz"],
    },
    include_package_data=True,
    install_requires=[
        "torch>=2.1",
        # Backbones. On CPU-only torch, torchvision's compiled ops do not load; see
        # sahmr/models/backbones/_compat.py for the one workaround.
        "torchvision>=0.16",
        "timm>=0.9",
        # spconv publishes one wheel per CUDA line; cu120 has no Python 3.12 wheel.
        "spconv-cu120>=2.3.6; python_version < '3.12'",
        "spconv-cu121>=2.3.6; python_version >= '3.12'",
        "smplx>=0.1.28",
        "open3d>=0.18; python_version < '3.13'",
        "numpy>=1.24",
        "scipy>=1.10",
        "trimesh>=4.0",
        "hydra-core>=1.3",
        "fast-simplification>=0.1.7",
        "scikit-image>=0.21",
        "tqdm>=4.60",
        "tensorboard>=2.14",
        "pillow>=9.0",
        "matplotlib>=3.7",
        "rtree>=1.0",
        "embreex>=2.17; platform_machine == 'x86_64'",
    ],
    extras_require={
        "dev": ["pytest>=7.4", "pytest-xdist>=3.3", "ruff>=0.5"],
    },
    entry_points={
        "console_scripts": [
            "sahmr-show-body=sahmr.cli.show_body:main",
            "sahmr-demo=sahmr.cli.demo:main",
        ],
    },
)
