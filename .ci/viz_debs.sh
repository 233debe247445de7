#!/usr/bin/env bash
# `make test` (once per machine): the Debian run-time packages of the rosbag2 / rviz2 tree.
# ../shared/ros2/activate-viz.sh names the ones missing on one stderr line
# ("... apt-get install -y PKG ..."); as root with apt-get they are installed here, otherwise one
# line says why not. Always exits 0: tests/test_ros2_tools.py decides (skip with that reason,
# fail in CI).
viz="$(dirname "$0")/../../shared/ros2/activate-viz.sh"
if [ ! -f "$viz" ]; then
  echo "viz-debs: $viz absent: the ros2 bag / rviz2 tests will skip"
  exit 0
fi
line=$(bash -c ". '$viz' >/dev/null" 2>&1 | grep -m1 'missing Debian packages')
[ -z "$line" ] && exit 0
pkgs=${line#*apt-get install -y }
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "viz-debs: cannot install $pkgs (needs root and apt-get): the ros2 bag / rviz2 tests will skip"
  exit 0
fi
echo "viz-debs: apt-get install -y --no-install-recommends $pkgs"
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >/dev/null \
  || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null \
       && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $pkgs >/dev/null; } \
  || echo "viz-debs: apt-get install failed: the ros2 bag / rviz2 tests will skip"
exit 0
