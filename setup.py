"""ament_python package ``priorocc``; also installs with plain ``pip install -e .``."""
from glob import glob

from setuptools import find_packages, setup

package_name = "priorocc"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["priorocc_core", "priorocc_core.*", "priorocc_ros", "priorocc_ros.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.py")),
        ("share/" + package_name + "/rviz", glob("launch/*.rviz")),
        ("share/" + package_name + "/configs", glob("training/configs/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="PriorOcc",
    maintainer_email="dev@priorocc.invalid",
    description="Camera-only 3D semantic occupancy (FlashOCC + 2D semantic prior) with a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "priorocc_import = priorocc_core.importer:main",
            "priorocc_export = priorocc_core.export:main",
            "priorocc_config_from_flashocc = priorocc_core.flashocc_config:main",
            "priorocc_quantize = priorocc_core.quantize:main",
            "occupancy_node = priorocc_ros.occupancy_node:main",
            "nuscenes_to_bag = priorocc_ros.nuscenes_to_bag:main",
            "priorocc_replay = priorocc_ros.replay:main",
            "priorocc_play = priorocc_ros.tools.play:main",
            "priorocc_record = priorocc_ros.tools.record:main",
            "priorocc_topics = priorocc_ros.tools.topics:main",
        ],
    },
)
