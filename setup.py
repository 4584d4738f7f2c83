from setuptools import find_packages, setup

setup(
    name='mmdvit',
    version='0.1.0',
    description='Dynamic spatial sparsification (DynamicViT / DynamicSwin / DynamicConvNeXt) '
    'for OpenMMLab',
    packages=find_packages(include=['mmdvit', 'mmdvit.*']),
    python_requires='>=3.10',
    license='Apache-2.0',
)
