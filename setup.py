from setuptools import setup

setup(
    name="nnunetv2-micd",
    version="0.1.0",
    description="Semi-supervised segmentation for nnU-Net v2: the MICD method as nnU-Net trainers",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=[
        "nnunetv2_micd",
        "nnunetv2_micd.benchmark",
        "nnunetv2_micd.dataset",
        "nnunetv2_micd.evaluation",
        "nnunetv2_micd.dataloading",
        "nnunetv2_micd.method",
        "nnunetv2_micd.training",
        "nnunetv2_micd.trainers",
    ],
    # The top-level trainers/ folder (what nnUNet_extTrainer points to) ships as part of the package,
    # so `micd trainer-path` finds it after `pip install .` as well as `pip install -e .`.
    package_dir={"nnunetv2_micd.trainers": "trainers"},
    package_data={"nnunetv2_micd.benchmark": ["protocols/*.json"],
                  "nnunetv2_micd.dataset": ["dhc_splits/*/*.txt", "dhc_splits/README.md"]},
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "torch>=2.1,<=2.14.1",
        "batchgeneratorsv2>=0.3",
        "batchgenerators>=0.25",
        "dynamic-network-architectures>=0.4,<0.5",
        "SimpleITK>=2.2",
        "numpy",
        "tqdm",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ["micd=nnunetv2_micd.cli:main"]},
)
