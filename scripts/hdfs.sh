#!/usr/bin/env bash
# Single-node test HDFS on 127.0.0.1, for tfos's tests and local experiments.
#
#   scripts/hdfs.sh install   download (cached) Hadoop 2.7.3 jars + build libhdfs.so
#   scripts/hdfs.sh start     install if needed, start NameNode + DataNode, wait for writes
#   scripts/hdfs.sh stop      stop the NameNode and DataNode started by `start`
#   scripts/hdfs.sh status    exit 0 when running and reachable, 3 otherwise
#   scripts/hdfs.sh env       print `export` lines for libhdfs users (tensorflow-io, pyarrow)
#   scripts/hdfs.sh clean     stop and delete this instance's data (not the download cache)
#
# The Hadoop 2.7.3 jars come from the pyspark 2.4.8 source archive on PyPI, libhdfs.so is
# compiled from the C sources in the pydoop 2.0.0 source archive on PyPI (see DESIGN.md).
# Downloads and builds are cached in ${TFOS_CACHE:-$HOME/.cache/tfos}; nothing is
# downloaded again once the cache is complete.
#
# Settings (environment):
#   TFOS_CACHE                  download/build cache          (default ~/.cache/tfos)
#   TFOS_HDFS_PORT              NameNode RPC port              (default 9000)
#   TFOS_HDFS_HTTP_PORT         NameNode HTTP port             (default 0 = any free port)
#   TFOS_HDFS_DN_PORT           DataNode data transfer port    (default 0 = any free port)
#   TFOS_HDFS_DN_IPC_PORT       DataNode IPC port              (default 0 = any free port)
#   TFOS_HDFS_DN_HTTP_PORT      DataNode HTTP port             (default 0 = any free port)
#   TFOS_HDFS_DIR               state dir: conf, data, logs, pids (default $TFOS_CACHE/hdfs-$PORT)
#   TFOS_HDFS_START_TIMEOUT     seconds to wait for a writable HDFS (default 120)
#   TFOS_HDFS_HEAP              JVM heap for each daemon       (default 384m)
#   JAVA_HOME                   JDK/JRE to use (default: the `java` on PATH)
#   TFOS_PYTHON                 python used to make the download venv (default python3)
set -euo pipefail

CACHE="${TFOS_CACHE:-$HOME/.cache/tfos}"
HADOOP_VERSION=2.7.3
PYSPARK_SDIST_VERSION=2.4.8
PYDOOP_SDIST_VERSION=2.0.0
HADOOP_DIR="$CACHE/hadoop-$HADOOP_VERSION"          # jars/, webapps/, lib/native/libhdfs.so
DOWNLOADS="$CACHE/downloads"
HOST=127.0.0.1
PORT="${TFOS_HDFS_PORT:-9000}"
NN_HTTP_PORT="${TFOS_HDFS_HTTP_PORT:-0}"
DN_PORT="${TFOS_HDFS_DN_PORT:-0}"
DN_IPC_PORT="${TFOS_HDFS_DN_IPC_PORT:-0}"
DN_HTTP_PORT="${TFOS_HDFS_DN_HTTP_PORT:-0}"
RUN_DIR="${TFOS_HDFS_DIR:-$CACHE/hdfs-$PORT}"
START_TIMEOUT="${TFOS_HDFS_START_TIMEOUT:-120}"
HEAP="${TFOS_HDFS_HEAP:-384m}"
URL="hdfs://$HOST:$PORT"

# Jars a NameNode, a DataNode, FsShell and libhdfs need (Hadoop's own lib/ set); the Spark,
# Scala, Hive and YARN jars of the archive are left out.
JAR_PATTERNS=(
  'hadoop-annotations-*' 'hadoop-auth-*' 'hadoop-common-*' 'hadoop-hdfs-*'
  'commons-*' 'guava-*' 'protobuf-java-*' 'log4j-1*' 'slf4j-api-*' 'slf4j-log4j12-*'
  'htrace-core-*' 'netty-3*' 'netty-all-*' 'jetty-6*' 'jetty-util-6*' 'javax.servlet-api-*'
  'javax.ws.rs-api-*' 'jsp-api-*' 'jackson-core-asl-*' 'jackson-mapper-asl-*' 'jackson-jaxrs-1*' 'jackson-xc-1*'
  'xercesImpl-*' 'xmlenc-*' 'jsr305-*' 'zookeeper-*' 'curator-*' 'apacheds-*' 'api-asn1-api-*'
  'api-util-*' 'avro-1*' 'paranamer-*' 'gson-*' 'httpclient-*' 'httpcore-*' 'activation-*'
  'jaxb-api-*' 'stax-api-*' 'xz-*' 'snappy-java-*' 'leveldbjni-all-*'
)

log() { echo "hdfs.sh: $*" >&2; }
die() { echo "hdfs.sh: ERROR: $*" >&2; exit 1; }

# ---------------------------------------------------------------- prerequisites
find_java() {
  local java_bin
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    java_bin="$JAVA_HOME/bin/java"
  elif java_bin="$(command -v java 2>/dev/null)"; then
    java_bin="$(readlink -f "$java_bin")"
  else
    die "java not found: install a JDK/JRE 8-17 (e.g. 'apt-get install openjdk-17-jdk-headless') or set JAVA_HOME"
  fi
  JAVA="$java_bin"
  if [[ -z "${JAVA_HOME:-}" || ! -x "$JAVA_HOME/bin/java" ]]; then
    JAVA_HOME="$(dirname "$(dirname "$java_bin")")"
    [[ "$(basename "$JAVA_HOME")" == jre ]] && JAVA_HOME="$(dirname "$JAVA_HOME")"
  fi
  local cand
  JVM_LIB_DIR=""
  for cand in "$JAVA_HOME/lib/server" "$JAVA_HOME/jre/lib/amd64/server" "$JAVA_HOME/jre/lib/server" \
              "$JAVA_HOME/lib/amd64/server"; do
    if [[ -f "$cand/libjvm.so" ]]; then JVM_LIB_DIR="$cand"; break; fi
  done
  [[ -n "$JVM_LIB_DIR" ]] || die "libjvm.so not found under JAVA_HOME=$JAVA_HOME (looked in lib/server, jre/lib/amd64/server)"
}

python_bin() {
  local py="${TFOS_PYTHON:-python3}"
  command -v "$py" >/dev/null 2>&1 || die "$py not found (needed once, to download the Hadoop jars with pip); set TFOS_PYTHON"
  echo "$py"
}

# A small venv used only to run `pip download` of two old source archives: pydoop's
# setup.py imports pkg_resources (gone from setuptools >= 81) and pyspark's needs `wheel`.
build_venv() {
  local venv="$CACHE/build-venv"
  if [[ ! -x "$venv/bin/pip" ]] || ! "$venv/bin/python" -c 'import pkg_resources, wheel' 2>/dev/null; then
    log "creating download venv $venv"
    rm -rf "$venv"
    "$(python_bin)" -m venv "$venv" || die "could not create a venv with $(python_bin) -m venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check 'setuptools<70' wheel \
      || die "pip could not install setuptools<70 and wheel into $venv"
  fi
  echo "$venv"
}

download_sdist() {  # name version -> path of the .tar.gz in $DOWNLOADS
  local name="$1" version="$2" file="$DOWNLOADS/$1-$2.tar.gz"
  if [[ ! -s "$file" ]]; then
    mkdir -p "$DOWNLOADS"
    local venv tmp
    venv="$(build_venv)"
    tmp="$(mktemp -d "$DOWNLOADS/.dl.XXXXXX")"
    log "downloading $name==$version source archive from PyPI (cached in $DOWNLOADS)"
    if ! "$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
        --no-build-isolation -d "$tmp" "$name==$version" >&2; then
      rm -rf "$tmp"
      die "pip download $name==$version failed (is PyPI reachable?)"
    fi
    mv "$tmp/$name-$version.tar.gz" "$file"
    rm -rf "$tmp"
  fi
  echo "$file"
}

# ---------------------------------------------------------------- install
install_hadoop() {
  [[ -f "$HADOOP_DIR/.jars-complete" ]] && return 0
  local sdist tmp
  sdist="$(download_sdist pyspark "$PYSPARK_SDIST_VERSION")"
  tmp="$(mktemp -d "$CACHE/.hadoop.XXXXXX")"
  log "extracting Hadoop $HADOOP_VERSION jars from $(basename "$sdist")"
  local args=() p
  for p in "${JAR_PATTERNS[@]}"; do args+=("pyspark-$PYSPARK_SDIST_VERSION/deps/jars/$p.jar"); done
  tar -xzf "$sdist" -C "$tmp" --wildcards "${args[@]}" || { rm -rf "$tmp"; die "could not extract jars from $sdist"; }
  mkdir -p "$HADOOP_DIR"
  rm -rf "$HADOOP_DIR/jars"
  mv "$tmp/pyspark-$PYSPARK_SDIST_VERSION/deps/jars" "$HADOOP_DIR/jars"
  rm -rf "$tmp"
  ls "$HADOOP_DIR"/jars/hadoop-hdfs-"$HADOOP_VERSION".jar >/dev/null || die "hadoop-hdfs-$HADOOP_VERSION.jar missing from $sdist"
  # NameNode/DataNode HTTP servers look for webapps/<name>/WEB-INF on the classpath.
  local w
  for w in hdfs datanode secondary; do
    mkdir -p "$HADOOP_DIR/webapps/$w/WEB-INF"
    printf '<web-app/>\n' >"$HADOOP_DIR/webapps/$w/WEB-INF/web.xml"
  done
  touch "$HADOOP_DIR/.jars-complete"
}

install_libhdfs() {
  local lib="$HADOOP_DIR/lib/native/libhdfs.so"
  [[ -s "$lib" ]] && return 0
  command -v gcc >/dev/null 2>&1 || die "gcc not found: it is needed once to build libhdfs.so ('apt-get install gcc')"
  [[ -f "$JAVA_HOME/include/jni.h" ]] || die "jni.h not found in $JAVA_HOME/include: libhdfs.so needs a JDK, not a JRE (e.g. 'apt-get install openjdk-17-jdk-headless')"
  local sdist tmp src
  sdist="$(download_sdist pydoop "$PYDOOP_SDIST_VERSION")"
  tmp="$(mktemp -d "$CACHE/.libhdfs.XXXXXX")"
  tar -xzf "$sdist" -C "$tmp" "pydoop-$PYDOOP_SDIST_VERSION/src/libhdfs" || { rm -rf "$tmp"; die "could not extract libhdfs sources from $sdist"; }
  src="$tmp/pydoop-$PYDOOP_SDIST_VERSION/src/libhdfs"
  log "building libhdfs.so with gcc"
  mkdir -p "$HADOOP_DIR/lib/native"
  if ! gcc -shared -fPIC -O2 -w -I"$src" -I"$src/include" -I"$src/os/posix" \
      -I"$JAVA_HOME/include" -I"$JAVA_HOME/include/linux" \
      "$src"/*.c "$src"/common/*.c "$src"/os/posix/*.c \
      -L"$JVM_LIB_DIR" -Wl,-rpath,"$JVM_LIB_DIR" -ljvm -lpthread -o "$tmp/libhdfs.so" >&2; then
    rm -rf "$tmp"
    die "gcc failed to build libhdfs.so"
  fi
  mkdir -p "$HADOOP_DIR/include"
  cp "$src/include/hdfs/hdfs.h" "$HADOOP_DIR/include/hdfs.h"
  mv "$tmp/libhdfs.so" "$lib.tmp" && mv "$lib.tmp" "$lib"
  rm -rf "$tmp"
}

cmd_install() {
  find_java
  mkdir -p "$CACHE"
  (
    flock -w 900 9 || die "another hdfs.sh install holds $CACHE/.install.lock"
    install_hadoop
    install_libhdfs
  ) 9>"$CACHE/.install.lock"
}

# ---------------------------------------------------------------- configuration
classpath() {  # conf dir + every jar, expanded (libhdfs does not expand wildcards)
  local cp="$RUN_DIR/conf:$HADOOP_DIR" j
  for j in "$HADOOP_DIR"/jars/*.jar; do cp="$cp:$j"; done
  echo "$cp"
}

write_conf() {
  mkdir -p "$RUN_DIR/conf" "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/data"
  cat >"$RUN_DIR/conf/core-site.xml" <<EOF
<?xml version="1.0"?>
<!-- generated by scripts/hdfs.sh -->
<configuration>
  <property><name>fs.defaultFS</name><value>$URL</value></property>
  <property><name>hadoop.tmp.dir</name><value>$RUN_DIR/data/tmp</value></property>
  <property><name>ipc.client.connect.max.retries</name><value>2</value></property>
  <property><name>ipc.client.connect.max.retries.on.timeouts</name><value>2</value></property>
</configuration>
EOF
  cat >"$RUN_DIR/conf/hdfs-site.xml" <<EOF
<?xml version="1.0"?>
<!-- generated by scripts/hdfs.sh -->
<configuration>
  <property><name>dfs.namenode.name.dir</name><value>file://$RUN_DIR/data/name</value></property>
  <property><name>dfs.datanode.data.dir</name><value>file://$RUN_DIR/data/data</value></property>
  <property><name>dfs.namenode.rpc-address</name><value>$HOST:$PORT</value></property>
  <property><name>dfs.namenode.http-address</name><value>$HOST:$NN_HTTP_PORT</value></property>
  <property><name>dfs.namenode.secondary.http-address</name><value>$HOST:0</value></property>
  <property><name>dfs.datanode.address</name><value>$HOST:$DN_PORT</value></property>
  <property><name>dfs.datanode.ipc.address</name><value>$HOST:$DN_IPC_PORT</value></property>
  <property><name>dfs.datanode.http.address</name><value>$HOST:$DN_HTTP_PORT</value></property>
  <property><name>dfs.datanode.hostname</name><value>$HOST</value></property>
  <property><name>dfs.webhdfs.enabled</name><value>false</value></property>
  <property><name>dfs.replication</name><value>1</value></property>
  <property><name>dfs.permissions.enabled</name><value>false</value></property>
  <property><name>dfs.namenode.safemode.extension</name><value>0</value></property>
  <property><name>dfs.namenode.safemode.min.datanodes</name><value>0</value></property>
  <property><name>dfs.heartbeat.interval</name><value>1</value></property>
  <property><name>dfs.blockreport.initialDelay</name><value>0</value></property>
  <property><name>dfs.namenode.fs-limits.min-block-size</name><value>1024</value></property>
  <property><name>dfs.datanode.du.reserved</name><value>0</value></property>
  <property><name>dfs.namenode.resource.du.reserved</name><value>0</value></property>
  <property><name>dfs.client.block.write.replace-datanode-on-failure.enable</name><value>false</value></property>
</configuration>
EOF
  cat >"$RUN_DIR/conf/log4j.properties" <<'EOF'
# generated by scripts/hdfs.sh: daemons log to stdout (redirected to logs/*.log), clients to stderr at WARN
log4j.rootLogger=${hadoop.root.logger}
hadoop.root.logger=WARN,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss,SSS} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
EOF
}

java_opts() {  # logger -> JVM options in JAVA_OPTS_ARR
  JAVA_OPTS_ARR=(-Xmx"$HEAP" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto
    -Djava.net.preferIPv4Stack=true -Dhadoop.log.dir="$RUN_DIR/logs" -Dhadoop.root.logger="$1"
    -cp "$RUN_DIR/conf:$HADOOP_DIR:$HADOOP_DIR/jars/*")
}

java_cmd() {  # class, args... (runs in the foreground, logging WARN and above to stderr)
  java_opts "WARN,console"
  "$JAVA" "${JAVA_OPTS_ARR[@]}" "$@"
}

# ---------------------------------------------------------------- processes
pid_alive() {  # name -> 0 when the pid file names a live process running that daemon
  local name="$1" pidfile="$RUN_DIR/pids/$1.pid" pid class
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  case "$name" in
    namenode) class=org.apache.hadoop.hdfs.server.namenode.NameNode ;;
    datanode) class=org.apache.hadoop.hdfs.server.datanode.DataNode ;;
  esac
  local cmdline
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$class"* && "$cmdline" == *"$RUN_DIR/conf"* ]]
}

started_alive() {  # name -> 0 while the process `start` launched is still running
  local pid
  pid="$(cat "$RUN_DIR/pids/$1.pid" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

start_daemon() {  # name class
  local name="$1" class="$2"
  if pid_alive "$name"; then return 0; fi
  : >"$RUN_DIR/logs/$name.log"
  java_opts "INFO,console"
  # setsid: own session, so the daemon outlives the caller's process group and terminal.
  # In a non-interactive shell the background child is no group leader: setsid execs, $! is java.
  setsid "$JAVA" "${JAVA_OPTS_ARR[@]}" "$class" >>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN_DIR/pids/$name.pid"
  disown $! 2>/dev/null || true
}

stop_daemon() {  # name
  local name="$1" pidfile="$RUN_DIR/pids/$1.pid" pid i
  if pid_alive "$name"; then
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

show_logs() {
  local name
  for name in namenode datanode; do
    if [[ -f "$RUN_DIR/logs/$name.log" ]]; then
      echo "----- last lines of $RUN_DIR/logs/$name.log -----" >&2
      grep -v -E ' (DEBUG|TRACE) ' "$RUN_DIR/logs/$name.log" | tail -n 25 >&2 || true
    fi
  done
}

probe_write() {  # 0 when a file with data can be written (NameNode + DataNode pipeline works)
  java_cmd org.apache.hadoop.fs.FsShell -fs "$URL" -put -f "$RUN_DIR/conf/core-site.xml" \
    "/.tfos-hdfs-ready" >"$RUN_DIR/logs/probe.log" 2>&1
}

running() { pid_alive namenode && pid_alive datanode && port_open; }

cmd_start() {
  cmd_install
  mkdir -p "$RUN_DIR"
  exec 8>"$RUN_DIR/.lock"
  flock -w "$START_TIMEOUT" 8 || die "another 'hdfs.sh start/stop' holds $RUN_DIR/.lock"
  if running; then
    log "already running at $URL (state in $RUN_DIR)"
    echo "$URL"
    return 0
  fi
  if ! pid_alive namenode && port_open; then
    die "port $HOST:$PORT is already in use by another process; stop it or set TFOS_HDFS_PORT"
  fi
  local t0=$SECONDS
  write_conf
  if [[ ! -f "$RUN_DIR/data/name/current/VERSION" ]]; then
    log "formatting NameNode in $RUN_DIR/data/name"
    rm -rf "$RUN_DIR/data/name" "$RUN_DIR/data/data"
    if ! java_cmd org.apache.hadoop.hdfs.server.namenode.NameNode -format -force -nonInteractive \
        >"$RUN_DIR/logs/format.log" 2>&1; then
      tail -n 30 "$RUN_DIR/logs/format.log" >&2
      die "formatting the NameNode failed (full log: $RUN_DIR/logs/format.log)"
    fi
  fi
  start_daemon namenode org.apache.hadoop.hdfs.server.namenode.NameNode
  start_daemon datanode org.apache.hadoop.hdfs.server.datanode.DataNode
  log "waiting up to ${START_TIMEOUT}s for $URL to accept writes"
  local deadline=$((SECONDS + START_TIMEOUT)) stage="the NameNode to listen on $HOST:$PORT" mkdir_pid=""
  while :; do
    for name in namenode datanode; do
      if ! started_alive "$name"; then
        show_logs
        stop_daemon namenode; stop_daemon datanode
        die "the $name exited during start-up while waiting for $stage (logs in $RUN_DIR/logs)"
      fi
    done
    if [[ "$stage" == the\ NameNode* ]] && port_open; then
      stage="a DataNode to register with the NameNode"
      # home and scratch directories (NameNode only), while the DataNode registers
      java_cmd org.apache.hadoop.fs.FsShell -fs "$URL" -mkdir -p /tmp "/user/$(id -un)" \
        >"$RUN_DIR/logs/mkdir.log" 2>&1 </dev/null 8>&- &
      mkdir_pid=$!
    fi
    if [[ "$stage" == a\ DataNode* ]] && grep -q -E 'Successfully sent block report|Got finalize command' "$RUN_DIR/logs/datanode.log"; then
      stage="a test file write to $URL/.tfos-hdfs-ready to succeed"
    fi
    if [[ "$stage" == a\ test* ]] && probe_write; then
      break
    fi
    if ((SECONDS >= deadline)); then
      show_logs
      [[ -s "$RUN_DIR/logs/probe.log" ]] && { echo "----- last write attempt -----" >&2; tail -n 15 "$RUN_DIR/logs/probe.log" >&2; }
      stop_daemon namenode; stop_daemon datanode
      die "timed out after ${START_TIMEOUT}s waiting for $stage (logs in $RUN_DIR/logs)"
    fi
    sleep 0.5
  done
  if [[ -n "$mkdir_pid" ]] && ! wait "$mkdir_pid"; then
    log "warning: could not create /tmp and /user/$(id -un) on $URL (see $RUN_DIR/logs/mkdir.log)"
  fi
  log "HDFS is up at $URL in $((SECONDS - t0))s (NameNode pid $(cat "$RUN_DIR/pids/namenode.pid"), DataNode pid $(cat "$RUN_DIR/pids/datanode.pid"), state in $RUN_DIR)"
  echo "$URL"
}

cmd_stop() {
  mkdir -p "$RUN_DIR"
  exec 8>"$RUN_DIR/.lock"
  flock -w 60 8 || die "another 'hdfs.sh start/stop' holds $RUN_DIR/.lock"
  stop_daemon datanode
  stop_daemon namenode
}

cmd_status() {
  local nn=stopped dn=stopped
  pid_alive namenode && nn="running (pid $(cat "$RUN_DIR/pids/namenode.pid"))"
  pid_alive datanode && dn="running (pid $(cat "$RUN_DIR/pids/datanode.pid"))"
  echo "namenode: $nn"
  echo "datanode: $dn"
  echo "url: $URL"
  echo "state: $RUN_DIR"
  if running; then echo "status: up"; return 0; fi
  echo "status: down"
  return 3
}

cmd_env() {
  cmd_install >&2
  write_conf
  local q
  q() { printf "%q" "$1"; }
  echo "export JAVA_HOME=$(q "$JAVA_HOME")"
  echo "export HADOOP_HOME=$(q "$HADOOP_DIR")"
  echo "export HADOOP_HDFS_HOME=$(q "$HADOOP_DIR")"
  echo "export HADOOP_CONF_DIR=$(q "$RUN_DIR/conf")"
  echo "export CLASSPATH=$(q "$(classpath)")"
  echo "export LD_LIBRARY_PATH=$(q "$JVM_LIB_DIR:$HADOOP_DIR/lib/native")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  echo "export ARROW_LIBHDFS_DIR=$(q "$HADOOP_DIR/lib/native")"
  echo "export TFOS_HDFS_URL=$(q "$URL")"
}

cmd_clean() {
  cmd_stop
  rm -rf "$RUN_DIR"
  log "removed $RUN_DIR"
}

case "${1:-}" in
  install) cmd_install ;;
  start) find_java; cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) find_java; cmd_env ;;
  clean) cmd_clean ;;
  *) echo "usage: $0 {install|start|stop|status|env|clean}" >&2; exit 2 ;;
esac
