#!/usr/bin/env bash
# Single-host Hadoop 3 (HDFS + YARN) on 127.0.0.1, for tfos's tests, CI and users who want to try
# tfos on YARN. Every daemon is its own JVM (`java -cp ...`), stopped by the PID `start` recorded.
#
#   scripts/hadoop.sh install              download (cached) the Hadoop jars from Maven Central, build libhdfs.so
#   scripts/hadoop.sh start [hdfs|yarn|all] install if needed and start; yarn implies hdfs (default: all)
#   scripts/hadoop.sh stop [hdfs|yarn|all]  stop daemons started by `start`: yarn = ResourceManager and
#                                            NodeManagers; hdfs or all (default) = everything
#   scripts/hadoop.sh status [hdfs|yarn|all] print the daemons' state; exit 0 when the part asked for is up, 3 if not
#   scripts/hadoop.sh env                   print `export` lines (libhdfs for tensorflow-io/pyarrow, HADOOP_CONF_DIR
#                                            for spark-submit --master yarn, TFOS_HDFS_URL, TFOS_YARN_RM ...)
#   scripts/hadoop.sh clean                 stop and delete this instance's state (not the download cache)
#   scripts/hadoop.sh yarn-logs APP_ID [ARGS]  aggregated logs of an application (= yarn logs -applicationId)
#   scripts/hadoop.sh yarn SUBCMD [ARGS]    Hadoop's yarn CLI: application, applicationattempt, container, node,
#                                            queue, logs, rmadmin (e.g. `yarn application -kill ID`)
#   scripts/hadoop.sh fs [ARGS]             Hadoop's FsShell on this HDFS (= hdfs dfs ARGS)
#
# The cluster: NameNode + DataNode (permissions off, replication 1); a ResourceManager whose
# Capacity Scheduler follows HPE's reference architecture for TensorFlowOnSpark (queues CPU_Q and
# GPU_Q, exclusive node labels CPU and GPU, see scripts/hadoop/capacity-scheduler.xml); two
# NodeManagers, one labelled GPU (advertising TFOS_YARN_GPUS fake `yarn.io/gpu`) and one CPU;
# log aggregation to $TFOS_HDFS_URL/tmp/logs.
#
# Jars: Hadoop $HADOOP_VERSION from Maven Central (scripts/hadoop/pom.xml, `mvn dependency:copy-dependencies`);
# libhdfs.so is compiled from the C sources in the pydoop 2.0.0 source archive on PyPI.
# Everything downloaded or built is cached in ${TFOS_CACHE:-$HOME/.cache/tfos}.
#
# Settings (environment):
#   TFOS_CACHE                  download/build cache          (default ~/.cache/tfos)
#   TFOS_HDFS_PORT              NameNode RPC port              (default 9000)
#   TFOS_HDFS_HTTP_PORT         NameNode HTTP port             (default 0 = any free port)
#   TFOS_HDFS_DN_PORT           DataNode data transfer port    (default 0 = any free port)
#   TFOS_HDFS_DN_IPC_PORT       DataNode IPC port              (default 0 = any free port)
#   TFOS_HDFS_DN_HTTP_PORT      DataNode HTTP port             (default 0 = any free port)
#   TFOS_YARN_PORT_BASE         first YARN port B (default 8030): RM scheduler B, resource tracker B+1,
#                               client RPC B+2 (TFOS_YARN_RM), admin B+3; GPU NodeManager RPC/localizer/web
#                               B+20..B+22, CPU NodeManager B+30..B+32
#   TFOS_YARN_WEB_PORT          ResourceManager web UI and REST API (default 8088)
#   TFOS_YARN_NM_VCORES         vcores of each NodeManager     (default 4)
#   TFOS_YARN_NM_MEMORY_MB      memory of each NodeManager     (default 8192)
#   TFOS_YARN_GPUS              yarn.io/gpu of the GPU NodeManager (default 4)
#   TFOS_HADOOP_DIR             state dir: conf, data, logs, pids (default $TFOS_CACHE/hadoop-run-$TFOS_HDFS_PORT)
#   TFOS_HDFS_DIR               older name of TFOS_HADOOP_DIR (used when that is unset)
#   TFOS_HADOOP_START_TIMEOUT   seconds each start-up wait may take (default 120; TFOS_HDFS_START_TIMEOUT too)
#   TFOS_HADOOP_HEAP            JVM heap of the HDFS daemons and NodeManagers (default 256m)
#   TFOS_YARN_RM_HEAP           JVM heap of the ResourceManager (default 512m)
#   JAVA_HOME                   JDK to use (default: the `java` on PATH)
#   TFOS_PYTHON                 python3 for JSON checks and the download venv (default python3)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TEMPLATES="$SCRIPT_DIR/hadoop"
CACHE="${TFOS_CACHE:-$HOME/.cache/tfos}"
HADOOP_VERSION=3.5.0
PYDOOP_SDIST_VERSION=2.0.0
HADOOP_DIR="$CACHE/hadoop-$HADOOP_VERSION"          # jars/, webapps/, lib/native/libhdfs.so, include/
DOWNLOADS="$CACHE/downloads"
HOST=127.0.0.1
PORT="${TFOS_HDFS_PORT:-9000}"
NN_HTTP_PORT="${TFOS_HDFS_HTTP_PORT:-0}"
DN_PORT="${TFOS_HDFS_DN_PORT:-0}"
DN_IPC_PORT="${TFOS_HDFS_DN_IPC_PORT:-0}"
DN_HTTP_PORT="${TFOS_HDFS_DN_HTTP_PORT:-0}"
YB="${TFOS_YARN_PORT_BASE:-8030}"
RM_SCHED_PORT=$((YB)) RM_TRACKER_PORT=$((YB + 1)) RM_PORT=$((YB + 2)) RM_ADMIN_PORT=$((YB + 3))
RM_WEB_PORT="${TFOS_YARN_WEB_PORT:-8088}"
NM_VCORES="${TFOS_YARN_NM_VCORES:-4}"
NM_MEMORY_MB="${TFOS_YARN_NM_MEMORY_MB:-8192}"
GPUS="${TFOS_YARN_GPUS:-4}"
NODEMANAGERS=(nm-gpu nm-cpu)
declare -A NM_LABEL=([nm-gpu]=GPU [nm-cpu]=CPU)
declare -A NM_PORT0=([nm-gpu]=$((YB + 20)) [nm-cpu]=$((YB + 30)))   # RPC; +1 localizer, +2 web
RUN_DIR="${TFOS_HADOOP_DIR:-${TFOS_HDFS_DIR:-$CACHE/hadoop-run-$PORT}}"
START_TIMEOUT="${TFOS_HADOOP_START_TIMEOUT:-${TFOS_HDFS_START_TIMEOUT:-120}}"
HEAP="${TFOS_HADOOP_HEAP:-256m}"
RM_HEAP="${TFOS_YARN_RM_HEAP:-512m}"
URL="hdfs://$HOST:$PORT"
RM_WEB="http://$HOST:$RM_WEB_PORT"
HDFS_DAEMONS=(namenode datanode)
YARN_DAEMONS=(resourcemanager "${NODEMANAGERS[@]}")

log() { echo "hadoop.sh: $*" >&2; }
die() { echo "hadoop.sh: ERROR: $*" >&2; exit 1; }

daemon_class() {
  case "$1" in
    namenode) echo org.apache.hadoop.hdfs.server.namenode.NameNode ;;
    datanode) echo org.apache.hadoop.hdfs.server.datanode.DataNode ;;
    resourcemanager) echo org.apache.hadoop.yarn.server.resourcemanager.ResourceManager ;;
    nm-*) echo org.apache.hadoop.yarn.server.nodemanager.NodeManager ;;
    *) die "unknown daemon $1" ;;
  esac
}

conf_dir_of() {  # daemon -> its configuration directory (NodeManagers have their own)
  case "$1" in nm-*) echo "$RUN_DIR/conf-$1" ;; *) echo "$RUN_DIR/conf" ;; esac
}

# ---------------------------------------------------------------- prerequisites
find_java() {
  local java_bin
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    java_bin="$JAVA_HOME/bin/java"
  elif java_bin="$(command -v java 2>/dev/null)"; then
    java_bin="$(readlink -f "$java_bin")"
  else
    die "java not found: install a JDK 17 (e.g. 'apt-get install openjdk-17-jdk-headless') or set JAVA_HOME"
  fi
  JAVA="$java_bin"
  if [[ -z "${JAVA_HOME:-}" || ! -x "$JAVA_HOME/bin/java" ]]; then
    JAVA_HOME="$(dirname "$(dirname "$java_bin")")"
    [[ "$(basename "$JAVA_HOME")" == jre ]] && JAVA_HOME="$(dirname "$JAVA_HOME")"
  fi
  export JAVA_HOME
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
  command -v "$py" >/dev/null 2>&1 || die "$py not found (needed for JSON checks and the download venv); set TFOS_PYTHON"
  echo "$py"
}

sudo_cmd() { if [[ "$(id -u)" == 0 ]]; then "$@"; else sudo "$@"; fi; }

find_mvn() {
  if ! command -v mvn >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || die "mvn not found: install Apache Maven (it fetches the Hadoop jars from Maven Central)"
    log "mvn not found: installing Debian's maven with apt-get"
    sudo_cmd apt-get update -q >&2 || die "apt-get update failed (needed to install maven)"
    DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -q maven >&2 \
      || die "apt-get install maven failed: install Apache Maven by hand"
  fi
}

# A small venv used only to run `pip download` of pydoop's source archive (its setup.py imports
# pkg_resources, gone from setuptools >= 81).
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
  local stamp="$HADOOP_DIR/.jars-complete" pom="$TEMPLATES/pom.xml"
  [[ -f "$pom" ]] || die "$pom is missing"
  # The stamp holds the pom's checksum: editing the pom re-resolves the jars.
  local sum
  sum="$(sha256sum "$pom" | cut -d' ' -f1)"
  [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" ]] && return 0
  find_mvn
  local tmp t0=$SECONDS
  mkdir -p "$HADOOP_DIR"
  tmp="$(mktemp -d "$CACHE/.hadoop.XXXXXX")"
  cp "$pom" "$tmp/pom.xml"
  log "downloading Hadoop $HADOOP_VERSION jars from Maven Central with mvn (cached in $CACHE/m2; ~100 MB, 1-3 minutes)"
  if ! (cd "$tmp" && mvn -q -B -Dmaven.repo.local="$CACHE/m2" dependency:copy-dependencies \
      -DoutputDirectory=jars -DincludeScope=runtime >"$tmp/mvn.log" 2>&1); then
    tail -n 40 "$tmp/mvn.log" >&2
    local keep="$CACHE/mvn-failed.log"
    cp "$tmp/mvn.log" "$keep"
    rm -rf "$tmp"
    die "mvn could not fetch the Hadoop $HADOOP_VERSION jars (is Maven Central reachable? full log: $keep)"
  fi
  ls "$tmp"/jars/hadoop-hdfs-"$HADOOP_VERSION".jar "$tmp"/jars/hadoop-yarn-server-nodemanager-"$HADOOP_VERSION".jar \
    >/dev/null 2>&1 || { rm -rf "$tmp"; die "mvn ran but hadoop-hdfs/nodemanager $HADOOP_VERSION jars are missing"; }
  rm -rf "$HADOOP_DIR/jars"
  mv "$tmp/jars" "$HADOOP_DIR/jars"
  rm -rf "$tmp"
  # The NameNode/DataNode HTTP servers look for webapps/<name>/WEB-INF on the classpath; the
  # hadoop-hdfs jar on Maven Central has none (YARN's are in hadoop-yarn-common).
  local w
  for w in hdfs datanode secondary journal; do
    mkdir -p "$HADOOP_DIR/webapps/$w/WEB-INF"
    printf '<web-app/>\n' >"$HADOOP_DIR/webapps/$w/WEB-INF/web.xml"
  done
  echo "$sum" >"$stamp"
  log "Hadoop $HADOOP_VERSION jars ready in $HADOOP_DIR/jars ($(find "$HADOOP_DIR/jars" -name '*.jar' | wc -l) jars, $((SECONDS - t0))s)"
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
    flock -w 900 9 || die "another hadoop.sh install held $CACHE/.install.lock for 900 s"
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

prop() { printf '  <property><name>%s</name><value>%s</value></property>\n' "$1" "$2"; }

core_site() {
  echo '<?xml version="1.0"?>'
  echo '<!-- generated by scripts/hadoop.sh -->'
  echo '<configuration>'
  prop fs.defaultFS "$URL"
  prop hadoop.tmp.dir "$RUN_DIR/data/tmp"
  prop ipc.client.connect.max.retries 2
  prop ipc.client.connect.max.retries.on.timeouts 2
  echo '</configuration>'
}

hdfs_site() {
  echo '<?xml version="1.0"?>'
  echo '<!-- generated by scripts/hadoop.sh -->'
  echo '<configuration>'
  prop dfs.namenode.name.dir "file://$RUN_DIR/data/name"
  prop dfs.datanode.data.dir "file://$RUN_DIR/data/data"
  prop dfs.namenode.rpc-address "$HOST:$PORT"
  prop dfs.namenode.http-address "$HOST:$NN_HTTP_PORT"
  prop dfs.namenode.secondary.http-address "$HOST:0"
  prop dfs.datanode.address "$HOST:$DN_PORT"
  prop dfs.datanode.ipc.address "$HOST:$DN_IPC_PORT"
  prop dfs.datanode.http.address "$HOST:$DN_HTTP_PORT"
  prop dfs.datanode.hostname "$HOST"
  prop dfs.webhdfs.enabled false
  prop dfs.replication 1
  prop dfs.permissions.enabled false
  prop dfs.namenode.safemode.extension 0
  prop dfs.namenode.safemode.min.datanodes 0
  prop dfs.heartbeat.interval 1
  prop dfs.blockreport.initialDelay 0
  prop dfs.namenode.fs-limits.min-block-size 1024
  prop dfs.datanode.du.reserved 0
  prop dfs.namenode.resource.du.reserved 0
  prop dfs.client.block.write.replace-datanode-on-failure.enable false
  echo '</configuration>'
}

yarn_site() {  # [nodemanager] -> yarn-site.xml (the RM's and clients' without an argument)
  local nm="${1:-}"
  echo '<?xml version="1.0"?>'
  echo "<!-- generated by scripts/hadoop.sh${nm:+ for NodeManager $nm} -->"
  echo '<configuration>'
  prop yarn.resourcemanager.hostname "$HOST"
  prop yarn.resourcemanager.address "$HOST:$RM_PORT"
  prop yarn.resourcemanager.scheduler.address "$HOST:$RM_SCHED_PORT"
  prop yarn.resourcemanager.resource-tracker.address "$HOST:$RM_TRACKER_PORT"
  prop yarn.resourcemanager.admin.address "$HOST:$RM_ADMIN_PORT"
  prop yarn.resourcemanager.webapp.address "$HOST:$RM_WEB_PORT"
  prop yarn.resourcemanager.webapp.https.address "$HOST:0"
  prop yarn.resourcemanager.scheduler.class org.apache.hadoop.yarn.server.resourcemanager.scheduler.capacity.CapacityScheduler
  prop yarn.resourcemanager.recovery.enabled false
  prop yarn.resourcemanager.nm-container-queuing.enabled false
  prop yarn.timeline-service.enabled false
  prop yarn.webapp.ui2.enable false
  # fail within a minute (not 15) when the RM is unreachable; NodeManagers retry every second
  prop yarn.resourcemanager.connect.max-wait.ms 60000
  prop yarn.resourcemanager.connect.retry-interval.ms 1000
  # a lost NodeManager is declared LOST after 60 s (default 10 min)
  prop yarn.nm.liveness-monitor.expiry-interval-ms 60000
  prop yarn.scheduler.minimum-allocation-mb 256
  prop yarn.scheduler.maximum-allocation-mb "$NM_MEMORY_MB"
  prop yarn.scheduler.minimum-allocation-vcores 1
  prop yarn.scheduler.maximum-allocation-vcores "$NM_VCORES"
  # node labels: the label store lives in the state dir. Labels are assigned by the NodeManagers
  # themselves (distributed configuration, config provider): each NodeManager's own yarn-site.xml
  # names its partition, so the labels survive RM restarts and NodeManager port changes without a
  # post-start `rmadmin -replaceLabelsOnNode` step; the RM only needs the labels added to the cluster.
  prop yarn.node-labels.enabled true
  prop yarn.node-labels.fs-store.root-dir "file://$RUN_DIR/data/node-labels"
  prop yarn.node-labels.configuration-type distributed
  # log aggregation into HDFS, read back by `hadoop.sh yarn-logs` (LogsCLI)
  prop yarn.log-aggregation-enable true
  prop yarn.nodemanager.remote-app-log-dir /tmp/logs
  prop yarn.log-aggregation.retain-seconds 604800
  if [[ -n "$nm" ]]; then
    local p="${NM_PORT0[$nm]}" d="$RUN_DIR/$nm"
    prop yarn.nodemanager.hostname "$HOST"
    prop yarn.nodemanager.address "$HOST:$p"
    prop yarn.nodemanager.localizer.address "$HOST:$((p + 1))"
    prop yarn.nodemanager.webapp.address "$HOST:$((p + 2))"
    prop yarn.nodemanager.webapp.https.address "$HOST:0"
    prop yarn.nodemanager.collector-service.address "$HOST:0"
    prop yarn.nodemanager.amrmproxy.address "$HOST:0"
    prop yarn.nodemanager.local-dirs "$d/local"
    prop yarn.nodemanager.log-dirs "$d/logs"
    prop yarn.nodemanager.recovery.enabled false
    prop yarn.nodemanager.container-executor.class org.apache.hadoop.yarn.server.nodemanager.DefaultContainerExecutor
    prop yarn.nodemanager.resource.memory-mb "$NM_MEMORY_MB"
    prop yarn.nodemanager.resource.cpu-vcores "$NM_VCORES"
    prop yarn.nodemanager.resource.detect-hardware-capabilities false
    # the physical-memory check stays on (YARN kills containers over their memory), virtual memory is not checked.
    # Without cgroups that check is the NodeManager's polling monitor, which Hadoop 3 skips while
    # yarn.nodemanager.resource.memory.enforced (cgroups' strict enforcement) is true, its default.
    prop yarn.nodemanager.pmem-check-enabled true
    prop yarn.nodemanager.resource.memory.enforced false
    prop yarn.nodemanager.container-monitor.interval-ms 1000
    prop yarn.nodemanager.vmem-check-enabled false
    prop yarn.nodemanager.aux-services ""
    prop yarn.nodemanager.delete.debug-delay-sec 0
    prop yarn.nodemanager.log-aggregation.roll-monitoring-interval-seconds 30
    prop yarn.nodemanager.log-aggregation.roll-monitoring-interval-seconds.min 30
    prop yarn.nodemanager.disk-health-checker.max-disk-utilization-per-disk-percentage 99
    prop yarn.nodemanager.user-home-dir "$HOME"
    prop yarn.nodemanager.node-labels.provider config
    prop yarn.nodemanager.node-labels.provider.configured-node-partition "${NM_LABEL[$nm]}"
    prop yarn.nodemanager.node-labels.provider.fetch-interval-ms 10000
  fi
  echo '</configuration>'
}

resource_types() {
  echo '<?xml version="1.0"?>'
  echo '<!-- generated by scripts/hadoop.sh: GPUs are a YARN resource type (RM and NodeManagers) -->'
  echo '<configuration>'
  prop yarn.resource-types yarn.io/gpu
  echo '</configuration>'
}

node_resources() {  # count -> node-resources.xml of a NodeManager
  # Static GPU count: the GPU resource plugin (yarn.nodemanager.resource-plugins=yarn.io/gpu) assigns
  # GPUs to containers in the LinuxContainerExecutor's cgroups resource-handler chain, which the
  # DefaultContainerExecutor never runs; for fake GPUs the plugin would only add nvidia-smi discovery.
  # The RM schedules yarn.io/gpu from this count either way; Spark's discovery script picks addresses.
  echo '<?xml version="1.0"?>'
  echo '<!-- generated by scripts/hadoop.sh -->'
  echo '<configuration>'
  prop yarn.nodemanager.resource-type.yarn.io/gpu "$1"
  echo '</configuration>'
}

log4j_props() {
  cat <<'EOF'
# generated by scripts/hadoop.sh: daemons log to stdout (redirected to logs/*.log), clients to stderr at WARN
log4j.rootLogger=${hadoop.root.logger}
hadoop.root.logger=WARN,console
log4j.appender.console=org.apache.log4j.ConsoleAppender
log4j.appender.console.target=System.err
log4j.appender.console.layout=org.apache.log4j.PatternLayout
log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss,SSS} %p %c{2}: %m%n
log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR
log4j.logger.org.apache.hadoop.conf.Configuration.deprecation=ERROR
log4j.logger.org.eclipse.jetty=WARN
log4j.logger.http.requests=WARN
EOF
}

write_file() {  # path, content on stdin: replaced only when it changed
  local tmp="$1.tmp.$$"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

write_conf() {
  mkdir -p "$RUN_DIR/conf" "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/data"
  [[ -f "$TEMPLATES/capacity-scheduler.xml" ]] || die "$TEMPLATES/capacity-scheduler.xml is missing"
  local dir nm
  for dir in conf "${NODEMANAGERS[@]/#/conf-}"; do
    mkdir -p "$RUN_DIR/$dir"
    core_site | write_file "$RUN_DIR/$dir/core-site.xml"
    hdfs_site | write_file "$RUN_DIR/$dir/hdfs-site.xml"
    resource_types | write_file "$RUN_DIR/$dir/resource-types.xml"
    log4j_props | write_file "$RUN_DIR/$dir/log4j.properties"
  done
  yarn_site | write_file "$RUN_DIR/conf/yarn-site.xml"
  write_file "$RUN_DIR/conf/capacity-scheduler.xml" <"$TEMPLATES/capacity-scheduler.xml"
  for nm in "${NODEMANAGERS[@]}"; do
    mkdir -p "$RUN_DIR/$nm/local" "$RUN_DIR/$nm/logs"
    yarn_site "$nm" | write_file "$RUN_DIR/conf-$nm/yarn-site.xml"
    if [[ "${NM_LABEL[$nm]}" == GPU ]]; then
      node_resources "$GPUS" | write_file "$RUN_DIR/conf-$nm/node-resources.xml"
    else
      node_resources 0 | write_file "$RUN_DIR/conf-$nm/node-resources.xml"
    fi
  done
}

# Java 17: Hadoop's YARN daemons reflect into JDK internals (Guice/cglib, the RM's web app).
JDK17_OPENS=(--add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.security=ALL-UNNAMED --add-opens=java.base/sun.security.x509=ALL-UNNAMED)

java_opts() {  # logger heap conf_dir [tag] -> JVM options in JAVA_OPTS_ARR
  JAVA_OPTS_ARR=(-Xmx"$2" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xshare:auto "${JDK17_OPENS[@]}"
    -Djava.net.preferIPv4Stack=true -Dhadoop.log.dir="$RUN_DIR/logs" -Dyarn.log.dir="$RUN_DIR/logs"
    -Dhadoop.root.logger="$1" -Dyarn.root.logger="$1")
  [[ -n "${4:-}" ]] && JAVA_OPTS_ARR+=("-Dtfos.hadoop.daemon=$4")
  JAVA_OPTS_ARR+=(-cp "$3:$HADOOP_DIR:$HADOOP_DIR/jars/*")
}

clean_env() {  # the environment a daemon or CLI runs in: no CLASSPATH/HADOOP_* from the caller
  CLEAN_ENV=(env -u CLASSPATH -u HADOOP_CONF_DIR -u YARN_CONF_DIR -u HADOOP_HOME -u HADOOP_HDFS_HOME
    -u HADOOP_COMMON_HOME -u HADOOP_YARN_HOME -u HADOOP_PREFIX -u HADOOP_CLASSPATH "JAVA_HOME=$JAVA_HOME")
}

java_cmd() {  # class, args... (client tool in the foreground, WARN and above to stderr)
  java_opts "WARN,console" 256m "$RUN_DIR/conf"
  clean_env
  "${CLEAN_ENV[@]}" "$JAVA" "${JAVA_OPTS_ARR[@]}" "$@"
}

# ---------------------------------------------------------------- processes
tag_of() { echo "$1@$RUN_DIR"; }

pid_alive() {  # name -> 0 when the pid file names a live process running that daemon of this instance
  local name="$1" pidfile="$RUN_DIR/pids/$1.pid" pid cmdline
  [[ -f "$pidfile" ]] || return 1
  pid="$(cat "$pidfile" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || return 1
  [[ "$cmdline" == *"$(daemon_class "$name")"* && "$cmdline" == *"-Dtfos.hadoop.daemon=$(tag_of "$name") "* ]]
}

started_alive() {  # name -> 0 while the process `start` launched is still running
  local pid
  pid="$(cat "$RUN_DIR/pids/$1.pid" 2>/dev/null)" && [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

start_daemon() {  # name
  local name="$1" heap="$HEAP"
  if pid_alive "$name"; then return 0; fi
  [[ "$name" == resourcemanager ]] && heap="$RM_HEAP"
  : >"$RUN_DIR/logs/$name.log"
  java_opts "INFO,console" "$heap" "$(conf_dir_of "$name")" "$(tag_of "$name")"
  clean_env
  # setsid: own session, so the daemon outlives the caller's process group and terminal.
  # In a non-interactive shell the background child is no group leader: setsid execs, $! is java.
  setsid "${CLEAN_ENV[@]}" "$JAVA" "${JAVA_OPTS_ARR[@]}" "$(daemon_class "$name")" \
    >>"$RUN_DIR/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$RUN_DIR/pids/$name.pid"
  disown $! 2>/dev/null || true
  STARTED_HERE+=("$name")
}

# A `start` that fails stops the daemons it started itself (not those that already ran).
STARTED_HERE=()
stop_started_on_failure() {
  local rc=$? i
  if ((rc != 0 && ${#STARTED_HERE[@]} > 0)); then
    log "start failed: stopping the daemons it started (${STARTED_HERE[*]})"
    for ((i = ${#STARTED_HERE[@]} - 1; i >= 0; i--)); do stop_daemon "${STARTED_HERE[i]}"; done
  fi
  return "$rc"
}

stop_daemon() {  # name
  local name="$1" pidfile="$RUN_DIR/pids/$1.pid" pid i
  if pid_alive "$name"; then
    pid="$(cat "$pidfile")"
    kill "$pid" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name (pid $pid) ignored SIGTERM for 15 s, sending SIGKILL"
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
}

show_logs() {  # daemons...
  local name
  for name in "$@"; do
    if [[ -f "$RUN_DIR/logs/$name.log" ]]; then
      echo "----- last lines of $RUN_DIR/logs/$name.log -----" >&2
      grep -v -E ' (DEBUG|TRACE) ' "$RUN_DIR/logs/$name.log" | tail -n 25 >&2 || true
    fi
  done
}

http_get() {  # url -> body on stdout (5 s timeout); exit 1 when unreachable
  "$(python_bin)" - "$1" <<'EOF'
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=5) as r:
        sys.stdout.write(r.read().decode())
except Exception as e:
    sys.stderr.write(f"{sys.argv[1]}: {e}\n")
    sys.exit(1)
EOF
}

hdfs_running() { pid_alive namenode && pid_alive datanode && port_open "$PORT"; }

rm_started() { http_get "$RM_WEB/ws/v1/cluster/info" 2>/dev/null | grep -q '"state":"STARTED"'; }

nodes_problem() {  # prints what the NodeManagers still lack (empty when both run with their labels and GPUs)
  local body
  body="$(http_get "$RM_WEB/ws/v1/cluster/nodes" 2>&1)" || { echo "the ResourceManager REST API ($body)"; return 0; }
  "$(python_bin)" - "$body" "$HOST:${NM_PORT0[nm-gpu]}" "$HOST:${NM_PORT0[nm-cpu]}" "$GPUS" <<'EOF'
import json, sys
body, gpu_id, cpu_id, gpus = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# node ids carry the host name 127.0.0.1 resolves to (e.g. localhost): match on the port; a
# restarted NodeManager's old entry (SHUTDOWN, LOST) is shadowed by a RUNNING one
nodes = {}
for n in sorted((json.loads(body).get("nodes") or {}).get("node") or [], key=lambda n: n.get("state") == "RUNNING"):
    nodes[f"{sys.argv[2].split(':')[0]}:{n['id'].rsplit(':', 1)[1]}"] = n
def gpu_count(n):
    infos = ((n.get("totalResource") or {}).get("resourceInformations") or {}).get("resourceInformation") or []
    return sum(int(i.get("value", 0)) for i in infos if i.get("name") == "yarn.io/gpu")
for nid, label, want_gpus in ((gpu_id, "GPU", gpus), (cpu_id, "CPU", 0)):
    n = nodes.get(nid)
    if n is None or n.get("state") != "RUNNING":
        print(f"NodeManager {nid} to register as RUNNING (now: {n.get('state') if n else 'not registered'})")
    elif (n.get("nodeLabels") or []) != [label]:
        print(f"NodeManager {nid} to carry node label {label} (now: {n.get('nodeLabels')})")
    elif gpu_count(n) != want_gpus:
        print(f"NodeManager {nid} to report yarn.io/gpu={want_gpus} (now: {gpu_count(n)})")
EOF
}

yarn_running() {
  pid_alive resourcemanager && pid_alive nm-gpu && pid_alive nm-cpu && rm_started && [[ -z "$(nodes_problem)" ]]
}

wait_for() {  # what, daemons-that-must-stay-alive (space separated), test command...
  # (WAIT_DETAIL, when set, is a command whose output says what is still missing on a time-out)
  local what="$1" daemons="$2" deadline=$((SECONDS + START_TIMEOUT)) name detail=""
  shift 2
  log "waiting up to ${START_TIMEOUT}s for $what"
  while ! "$@"; do
    for name in $daemons; do
      if ! started_alive "$name"; then
        show_logs "$name"
        die "the $name exited during start-up while waiting for $what (logs in $RUN_DIR/logs/$name.log)"
      fi
    done
    if ((SECONDS >= deadline)); then
      # shellcheck disable=SC2086
      show_logs $daemons
      [[ -n "${WAIT_DETAIL:-}" ]] && detail="; still missing: $($WAIT_DETAIL | tr '\n' ';')"
      die "timed out after ${START_TIMEOUT}s waiting for $what$detail (logs in $RUN_DIR/logs)"
    fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- HDFS
probe_write() {  # 0 when a file with data can be written (NameNode + DataNode pipeline works)
  java_cmd org.apache.hadoop.fs.FsShell -fs "$URL" -put -f "$RUN_DIR/conf/core-site.xml" \
    "/.tfos-hdfs-ready" >"$RUN_DIR/logs/probe.log" 2>&1
}

datanode_registered() {
  grep -q -E 'Successfully sent block report|Got finalize command|Successfully registered with NN' \
    "$RUN_DIR/logs/datanode.log"
}

launch_hdfs() {  # format if needed and start NameNode + DataNode (HDFS_UP=1 when already running)
  HDFS_UP=0
  if hdfs_running; then
    log "HDFS already running at $URL (state in $RUN_DIR)"
    HDFS_UP=1
    return 0
  fi
  if ! pid_alive namenode && port_open "$PORT"; then
    die "port $HOST:$PORT is already in use by another process; stop it or set TFOS_HDFS_PORT"
  fi
  HDFS_T0=$SECONDS
  if [[ ! -f "$RUN_DIR/data/name/current/VERSION" ]]; then
    log "formatting NameNode in $RUN_DIR/data/name"
    rm -rf "$RUN_DIR/data/name" "$RUN_DIR/data/data"
    if ! java_cmd org.apache.hadoop.hdfs.server.namenode.NameNode -format -force -nonInteractive \
        >"$RUN_DIR/logs/format.log" 2>&1; then
      tail -n 30 "$RUN_DIR/logs/format.log" >&2
      die "formatting the NameNode failed (full log: $RUN_DIR/logs/format.log)"
    fi
  fi
  start_daemon namenode
  start_daemon datanode
}

await_hdfs() {  # wait until the HDFS launched by launch_hdfs accepts writes
  ((HDFS_UP)) && return 0
  wait_for "the NameNode to listen on $HOST:$PORT" "namenode datanode" port_open "$PORT"
  # home, scratch and log-aggregation directories (NameNode only), while the DataNode registers
  java_cmd org.apache.hadoop.fs.FsShell -fs "$URL" -mkdir -p /tmp /tmp/logs "/user/$(id -un)" \
    >"$RUN_DIR/logs/mkdir.log" 2>&1 </dev/null 8>&- &
  local mkdir_pid=$!
  wait_for "the DataNode to register with the NameNode" "namenode datanode" datanode_registered
  wait_for "a test file write to $URL/.tfos-hdfs-ready to succeed" "namenode datanode" probe_write
  wait "$mkdir_pid" || log "warning: could not create /tmp, /tmp/logs and /user/$(id -un) on $URL (see $RUN_DIR/logs/mkdir.log)"
  log "HDFS is up at $URL in $((SECONDS - HDFS_T0))s (NameNode pid $(cat "$RUN_DIR/pids/namenode.pid"), DataNode pid $(cat "$RUN_DIR/pids/datanode.pid"), state in $RUN_DIR)"
}

# ---------------------------------------------------------------- YARN
cluster_labels_present() {
  local body
  body="$(http_get "$RM_WEB/ws/v1/cluster/get-node-labels" 2>/dev/null)" || return 1
  [[ "$body" == *'"name":"CPU"'* && "$body" == *'"name":"GPU"'* ]]
}

launch_rm() {  # start the ResourceManager (YARN_UP=1 when all of YARN already runs)
  YARN_UP=0
  if yarn_running; then
    log "YARN already running: ResourceManager $HOST:$RM_PORT, web $RM_WEB"
    YARN_UP=1
    return 0
  fi
  YARN_T0=$SECONDS
  local p nm
  if ! pid_alive resourcemanager; then
    for p in "$RM_SCHED_PORT" "$RM_TRACKER_PORT" "$RM_PORT" "$RM_ADMIN_PORT" "$RM_WEB_PORT"; do
      port_open "$p" && die "port $HOST:$p is already in use by another process; stop it or set TFOS_YARN_PORT_BASE / TFOS_YARN_WEB_PORT"
    done
  fi
  for nm in "${NODEMANAGERS[@]}"; do
    if ! pid_alive "$nm"; then
      for p in "${NM_PORT0[$nm]}" $((NM_PORT0[$nm] + 1)) $((NM_PORT0[$nm] + 2)); do
        port_open "$p" && die "port $HOST:$p ($nm) is already in use by another process; stop it or set TFOS_YARN_PORT_BASE"
      done
    fi
  done
  start_daemon resourcemanager
}

await_yarn() {  # labels into the cluster, then the NodeManagers, and wait until both serve their labels
  ((YARN_UP)) && return 0
  local nm
  wait_for "the ResourceManager REST API $RM_WEB/ws/v1/cluster/info to report STARTED" resourcemanager rm_started
  if ! cluster_labels_present; then
    log "adding node labels CPU and GPU (exclusive) to the cluster"
    java_cmd org.apache.hadoop.yarn.client.cli.RMAdminCLI -addToClusterNodeLabels \
      "CPU(exclusive=true),GPU(exclusive=true)" >"$RUN_DIR/logs/rmadmin.log" 2>&1 \
      || { cat "$RUN_DIR/logs/rmadmin.log" >&2; false; } \
      || die "rmadmin -addToClusterNodeLabels failed (log: $RUN_DIR/logs/rmadmin.log)"
  fi
  # NodeManagers start after the labels exist: the RM rejects a registration with an unknown label
  for nm in "${NODEMANAGERS[@]}"; do start_daemon "$nm"; done
  nodes_ready() { [[ -z "$(nodes_problem)" ]]; }
  WAIT_DETAIL=nodes_problem wait_for "both NodeManagers to register, labelled GPU and CPU" \
    "resourcemanager ${NODEMANAGERS[*]}" nodes_ready
  log "YARN is up in $((SECONDS - YARN_T0))s: ResourceManager $HOST:$RM_PORT (web $RM_WEB), NodeManagers" \
    "$HOST:${NM_PORT0[nm-gpu]} (GPU, yarn.io/gpu=$GPUS) and $HOST:${NM_PORT0[nm-cpu]} (CPU)"
}

# ---------------------------------------------------------------- commands
lock_instance() {
  mkdir -p "$RUN_DIR"
  exec 8>"$RUN_DIR/.lock"
  flock -w "$1" 8 || die "another 'hadoop.sh start/stop' held $RUN_DIR/.lock for $1 s"
}

part_arg() {  # $1 -> hdfs|yarn|all
  case "${1:-all}" in
    hdfs | yarn | all) echo "${1:-all}" ;;
    *) die "expected hdfs, yarn or all, not '$1'" ;;
  esac
}

cmd_start() {
  local part
  part="$(part_arg "${1:-}")"
  local t0=$SECONDS
  cmd_install
  lock_instance $((START_TIMEOUT * 3))
  trap stop_started_on_failure EXIT
  write_conf
  # HDFS and the ResourceManager start side by side (the RM needs HDFS only once applications
  # run); the NodeManagers follow once the RM is up and knows the node labels.
  launch_hdfs
  [[ "$part" == hdfs ]] || launch_rm
  await_hdfs
  [[ "$part" == hdfs ]] || await_yarn
  log "ready in $((SECONDS - t0))s"
  echo "$URL"
}

cmd_stop() {
  local part d
  part="$(part_arg "${1:-}")"
  lock_instance 120
  for d in nm-cpu nm-gpu resourcemanager; do stop_daemon "$d"; done
  if [[ "$part" != yarn ]]; then
    stop_daemon datanode
    stop_daemon namenode
  fi
}

cmd_status() {
  local part name state up=0
  part="$(part_arg "${1:-}")"
  for name in "${HDFS_DAEMONS[@]}" "${YARN_DAEMONS[@]}"; do
    state=stopped
    pid_alive "$name" && state="running (pid $(cat "$RUN_DIR/pids/$name.pid"))"
    echo "$name: $state"
  done
  echo "url: $URL"
  echo "yarn-rm: $HOST:$RM_PORT"
  echo "yarn-web: $RM_WEB"
  echo "state: $RUN_DIR"
  if hdfs_running; then echo "hdfs: up"; else echo "hdfs: down"; up=3; fi
  if [[ "$part" != hdfs ]]; then
    if yarn_running; then
      echo "yarn: up"
    else
      echo "yarn: down"
      up=3
    fi
  fi
  if ((up == 0)); then echo "status: up"; else echo "status: down"; fi
  return "$up"
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
  echo "export YARN_CONF_DIR=$(q "$RUN_DIR/conf")"
  echo "export CLASSPATH=$(q "$(classpath)")"
  echo "export LD_LIBRARY_PATH=$(q "$JVM_LIB_DIR:$HADOOP_DIR/lib/native")\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
  echo "export ARROW_LIBHDFS_DIR=$(q "$HADOOP_DIR/lib/native")"
  echo "export TFOS_HDFS_URL=$(q "$URL")"
  echo "export TFOS_YARN_RM=$(q "$HOST:$RM_PORT")"
  echo "export TFOS_YARN_RM_WEB=$(q "$RM_WEB")"
}

cmd_clean() {
  cmd_stop all
  rm -rf "$RUN_DIR"
  log "removed $RUN_DIR"
}

yarn_cli() {  # subcommand args... -> Hadoop's yarn CLI classes, as the `yarn` script maps them
  local sub="${1:-}"
  [[ -n "$sub" ]] || die "usage: hadoop.sh yarn {application|applicationattempt|container|node|queue|logs|rmadmin} ARGS..."
  shift
  [[ -f "$RUN_DIR/conf/yarn-site.xml" ]] || write_conf
  case "$sub" in
    application | applicationattempt | container) java_cmd org.apache.hadoop.yarn.client.cli.ApplicationCLI "$sub" "$@" ;;
    node) java_cmd org.apache.hadoop.yarn.client.cli.NodeCLI "$@" ;;
    queue) java_cmd org.apache.hadoop.yarn.client.cli.QueueCLI "$@" ;;
    logs) java_cmd org.apache.hadoop.yarn.client.cli.LogsCLI "$@" ;;
    rmadmin) java_cmd org.apache.hadoop.yarn.client.cli.RMAdminCLI "$@" ;;
    *) die "unknown yarn subcommand '$sub' (application, applicationattempt, container, node, queue, logs, rmadmin)" ;;
  esac
}

usage() {
  echo "usage: $0 {install | start [hdfs|yarn|all] | stop [hdfs|yarn|all] | status [hdfs|yarn|all] | env | clean" \
       "| yarn-logs APP_ID [ARGS] | yarn SUBCMD [ARGS] | fs [ARGS]}" >&2
  exit 2
}

# main runs from one line: bash reads a script as it goes, so an edit of this file while a
# `start` waits cannot change what the running command does next.
main() {
  local cmd app
  cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) cmd_install ;;
    start) find_java; cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    status) cmd_status "$@" ;;
    env) find_java; cmd_env ;;
    clean) cmd_clean ;;
    yarn-logs)
      [[ $# -ge 1 ]] || die "usage: hadoop.sh yarn-logs APPLICATION_ID [more LogsCLI arguments]"
      find_java; app="$1"; shift; yarn_cli logs -applicationId "$app" "$@" ;;
    yarn) find_java; yarn_cli "$@" ;;
    fs) find_java; [[ -f "$RUN_DIR/conf/core-site.xml" ]] || write_conf; java_cmd org.apache.hadoop.fs.FsShell "$@" ;;
    *) usage ;;
  esac
}

main "$@"; exit $?
