#!/usr/bin/env bash
# Compatibility wrapper: the single-node test HDFS is the HDFS of scripts/hadoop.sh (Hadoop 3.5.0
# from Maven Central, libhdfs.so built from pydoop's sources). Same commands and settings as before:
#
#   scripts/hdfs.sh install   = hadoop.sh install
#   scripts/hdfs.sh start     = hadoop.sh start hdfs   (NameNode + DataNode; prints the hdfs:// URL)
#   scripts/hdfs.sh stop      = hadoop.sh stop         (also stops a YARN started on that HDFS)
#   scripts/hdfs.sh status    = hadoop.sh status hdfs  (exit 0 when HDFS is up, 3 otherwise)
#   scripts/hdfs.sh env       = hadoop.sh env
#   scripts/hdfs.sh clean     = hadoop.sh clean
#
# TFOS_CACHE, TFOS_HDFS_PORT, TFOS_HDFS_*_PORT, TFOS_HDFS_DIR and TFOS_HDFS_START_TIMEOUT apply as
# before; see scripts/hadoop.sh for the rest.
set -euo pipefail
hadoop_sh="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/hadoop.sh"
case "${1:-}" in
  start | status) exec bash "$hadoop_sh" "$1" hdfs ;;
  install | stop | env | clean) exec bash "$hadoop_sh" "$1" ;;
  *) echo "usage: $0 {install|start|stop|status|env|clean}" >&2; exit 2 ;;
esac
