#!/usr/bin/env bash
# A single-node Slurm cluster on localhost, with accounting, for testing the workflow with profiles/slurm.
#
#   sudo ci/slurm-localhost.sh up       install what is missing, write configs, start daemons, wait for idle
#   sudo ci/slurm-localhost.sh status   what runs, and the node state
#   sudo ci/slurm-localhost.sh down     stop exactly the daemons `up` started (keeps logs and the database)
#   sudo ci/slurm-localhost.sh purge    `down`, then delete the state directory
#
# Debian packages: munge, slurmctld, slurmd, slurm-client, slurmdbd, mariadb-server. No systemd: every
# daemon is started here and its PID recorded under $STATE/pids; `down` stops only those PIDs.
# Everything the cluster writes (configs, munge key and socket, MariaDB data, spool, logs) lives under
# $STATE, so a system munge or MariaDB on the same machine is left alone.
#
# Accounting (slurmdbd + MariaDB) is not optional: snakemake-executor-plugin-slurm polls job states with
# `sacct`, which fails without slurmdbd, and the plugin then waits forever without an error.
#
# The node advertises stand-in GPUs (GRES gpu whose device files are copies of /dev/null) so that jobs
# asking for `--gpus=1` are scheduled on a machine without a GPU; the GPU rules of the tiny study run on
# the CPU. Without cgroups nothing is bound: a job only gets CUDA_VISIBLE_DEVICES.
#
# Clients find the cluster through a symlink /etc/slurm/slurm.conf -> $STATE/etc/slurm.conf, which `up`
# creates (refusing to replace an existing file) and `down` removes: the plugin's job step strips
# SLURM_CONF from the environment of the `srun` it runs inside each job, so only the default path works.
#
# Settings (environment):
#   PRUNEBENCH_SLURM_STATE      state directory                          (/tmp/prunebench-slurm)
#   PRUNEBENCH_SLURM_PARTITION  partition name                           (debug)
#   PRUNEBENCH_SLURM_ACCOUNT    account for CI jobs                      (ci)
#   PRUNEBENCH_SLURM_USERS      extra users added to the account         ($SUDO_USER)
#   PRUNEBENCH_SLURM_CPUS       CPUs the node advertises                 (what `slurmd -C` detects)
#   PRUNEBENCH_SLURM_MEM_MB     memory the node advertises               (90% of what `slurmd -C` detects)
#   PRUNEBENCH_SLURM_GPUS       stand-in GPUs the node advertises        (1)
#   PRUNEBENCH_SLURM_PORT_BASE  slurmctld port; slurmd +1, slurmdbd +2, MariaDB +3   (6817)
# CPUs and memory above the hardware are allowed (SlurmdParameters=config_overrides): the node then
# oversubscribes, which is fine for tiny CI jobs and lets a site-sized profile be submitted unchanged.
set -euo pipefail

STATE="${PRUNEBENCH_SLURM_STATE:-/tmp/prunebench-slurm}"
PARTITION="${PRUNEBENCH_SLURM_PARTITION:-debug}"
ACCOUNT="${PRUNEBENCH_SLURM_ACCOUNT:-ci}"
EXTRA_USERS="${PRUNEBENCH_SLURM_USERS:-${SUDO_USER:-}}"
GPUS="${PRUNEBENCH_SLURM_GPUS:-1}"
PORT_BASE="${PRUNEBENCH_SLURM_PORT_BASE:-6817}"
CLUSTER=prunebench
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
# Start order; `down` stops them in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

ETC="$STATE/etc"
RUN="$STATE/run"
LOG="$STATE/log"
PIDS="$STATE/pids"
MUNGE_SOCKET="$RUN/munge/munge.socket"
DB_SOCKET="$RUN/mysqld/mysqld.sock"
DB_PORT=$((PORT_BASE + 3))
export SLURM_CONF="$ETC/slurm.conf"
DEFAULT_CONF=/etc/slurm/slurm.conf

say() { echo "[slurm-localhost $(date -u +%T)] $*"; }
die() {
    echo "slurm-localhost: error: $*" >&2
    exit 1
}

# The PID recorded for daemon $1, if that process is alive and is that daemon (guards against PID reuse).
running_pid() {
    local file="$PIDS/$1.pid" pid
    [[ -s "$file" ]] || return 1
    pid=$(<"$file")
    [[ -r "/proc/$pid/comm" && "$(<"/proc/$pid/comm")" == "$1" ]] || return 1
    echo "$pid"
}

# Wait up to $1 seconds for the command "${@:2}" to succeed.
wait_for() {
    local seconds=$1
    shift
    local end=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || return 1
        sleep 0.5
    done
}

# Start daemon $1 with the command "${@:3}" and record the PID it writes to its own pidfile $2.
launch() {
    local name=$1 pidfile=$2
    shift 2
    rm -f "$pidfile" # a stale one (slurmdbd and slurmctld leave theirs) would be mistaken for the new PID
    "$@"
    wait_for 30 test -s "$pidfile" || die "$name wrote no pidfile $pidfile; see the logs under $LOG"
    cp "$pidfile" "$PIDS/$name.pid"
    running_pid "$name" >/dev/null || die "$name exited right after starting; see the logs under $LOG"
    say "started $name (pid $(<"$PIDS/$name.pid"))"
}

# True once process $1 has exited (a zombie left for PID 1 to reap counts as exited).
gone() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    [[ "${stat##*) }" == Z* ]]
}

stop_daemons() {
    local i name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name=${DAEMONS[i]}
        if pid=$(running_pid "$name"); then
            say "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_for 30 gone "$pid"; then
                say "$name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$PIDS/$name.pid"
    done
}

link_default_conf() {
    if [[ -L "$DEFAULT_CONF" && "$(readlink "$DEFAULT_CONF")" == "$SLURM_CONF" ]]; then
        return 0
    fi
    if [[ -e "$DEFAULT_CONF" || -L "$DEFAULT_CONF" ]]; then
        die "$DEFAULT_CONF exists and is not this cluster's; move it away (jobs read that path)"
    fi
    mkdir -p "$(dirname "$DEFAULT_CONF")"
    ln -s "$SLURM_CONF" "$DEFAULT_CONF"
    say "linked $DEFAULT_CONF -> $SLURM_CONF"
}

unlink_default_conf() {
    if [[ -L "$DEFAULT_CONF" && "$(readlink "$DEFAULT_CONF")" == "$SLURM_CONF" ]]; then
        rm -f "$DEFAULT_CONF"
        say "removed the link $DEFAULT_CONF"
    fi
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists first when they do not know a package; retry once after an update
    # when the install fails anyway (stale lists give 404s).
    if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
        say "apt-get update"
        apt-get update -qq
    fi
    say "installing ${missing[*]}"
    if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1; then
        say "install failed; apt-get update and retry"
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$LOG/apt.log" 2>&1 ||
            die "apt-get install ${missing[*]} failed; see $LOG/apt.log"
    fi
}

# Write file $1 with mode $2 from stdin; fail if a daemon already runs with different content.
write_config() {
    local file=$1 mode=$2 new daemon
    new=$(cat)
    if [[ -f "$file" && "$(<"$file")" == "$new" ]]; then
        return 0
    fi
    for daemon in slurmdbd slurmctld slurmd; do
        if running_pid "$daemon" >/dev/null; then
            die "the cluster runs with another $file; run '$0 down' first"
        fi
    done
    printf '%s\n' "$new" >"$file.tmp"
    chmod "$mode" "$file.tmp"
    mv "$file.tmp" "$file"
}

write_configs() {
    local hw cpus mem topology i files
    hw=$(slurmd -C | head -1)
    cpus=${PRUNEBENCH_SLURM_CPUS:-$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hw")}
    # The detected sockets/cores/threads, unless the CPU count is overridden.
    topology="CPUs=$cpus"
    [[ -n "${PRUNEBENCH_SLURM_CPUS:-}" ]] || topology=$(grep -o 'CPUs=.*ThreadsPerCore=[0-9]*' <<<"$hw")
    mem=${PRUNEBENCH_SLURM_MEM_MB:-$(($(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw") * 90 / 100))}
    [[ "$cpus" =~ ^[1-9][0-9]*$ && "$mem" =~ ^[1-9][0-9]*$ && "$GPUS" =~ ^[1-9][0-9]*$ ]] ||
        die "node size must be positive integers: CPUS='$cpus' MEM_MB='$mem' GPUS='$GPUS'"
    NODE=$(hostname -s)
    getent hosts "$NODE" >/dev/null || die "host name '$NODE' does not resolve; add it to /etc/hosts"

    write_config "$ETC/slurm.conf" 644 <<EOF
# Written by ci/slurm-localhost.sh: a one-node cluster for CI.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmctldPort=$PORT_BASE
SlurmdPort=$((PORT_BASE + 1))
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurm/slurmctld.log
SlurmdLogFile=$LOG/slurm/slurmd.log
# No cgroups: works in containers without systemd.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# A job without --mem would otherwise take the whole node.
DefMemPerCPU=500
ReturnToService=2
# Trust the node size below, even above the hardware (see PRUNEBENCH_SLURM_CPUS).
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=5
JobCompType=jobcomp/none
# Keep the --comment (snakemake puts the rule and wildcards there) in the accounting records.
AccountingStoreFlags=job_comment
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT_BASE + 2))
# The munge socket for talking to slurmdbd (AuthInfo covers only slurmctld and slurmd).
AccountingStoragePass=$MUNGE_SOCKET
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
NodeName=$NODE $topology RealMemory=$mem Gres=gpu:$GPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    # slurmd ignores a GPU without a device file: $STATE/dev/gpuN are null devices (task/none binds nothing).
    mkdir -p "$STATE/dev"
    for ((i = 0; i < GPUS; i++)); do
        [[ -c "$STATE/dev/gpu$i" ]] || mknod "$STATE/dev/gpu$i" c 1 3 ||
            die "cannot create the stand-in GPU device $STATE/dev/gpu$i (mknod needs CAP_MKNOD)"
    done
    files="$STATE/dev/gpu[0-$((GPUS - 1))]"
    ((GPUS > 1)) || files="$STATE/dev/gpu0"
    write_config "$ETC/gres.conf" 644 <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$files
EOF
    write_config "$ETC/slurmdbd.conf" 600 <<EOF
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=$((PORT_BASE + 2))
SlurmUser=slurm
LogFile=$LOG/slurm/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm "$ETC/slurmdbd.conf"
    say "node $NODE: CPUs=$cpus RealMemory=$mem gpu=$GPUS (stand-in), partition $PARTITION, configs in $ETC"
}

munge_ok() { munge -n --socket "$MUNGE_SOCKET" | unmunge --socket "$MUNGE_SOCKET"; }
db_ok() { mariadb-admin --socket="$DB_SOCKET" ping; }

start_munge() {
    if [[ ! -s "$ETC/munge.key" ]]; then
        dd if=/dev/urandom of="$ETC/munge.key.tmp" bs=1024 count=1 status=none
        mv "$ETC/munge.key.tmp" "$ETC/munge.key"
    fi
    chown munge:munge "$ETC/munge.key"
    chmod 400 "$ETC/munge.key"
    if ! running_pid munged >/dev/null; then
        launch munged "$RUN/munge/munged.pid" runuser -u munge -- munged --key-file="$ETC/munge.key" \
            --socket="$MUNGE_SOCKET" --pid-file="$RUN/munge/munged.pid" --log-file="$LOG/munge/munged.log" \
            --seed-file="$STATE/munge-seed/munged.seed"
    fi
    wait_for 10 munge_ok || die "munge does not work; see $LOG/munge/munged.log"
}

# mariadbd does not daemonize itself. --no-defaults: ignore the system my.cnf (its socket, port and
# datadir belong to a system server).
mariadbd_background() {
    setsid mariadbd --no-defaults --user=mysql --datadir="$STATE/mysql" --socket="$DB_SOCKET" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$RUN/mysqld/mariadbd.pid" \
        --log-error="$LOG/mysql/mariadbd.log" </dev/null >/dev/null 2>&1 &
}

start_mariadb() {
    if ! running_pid mariadbd >/dev/null; then
        if [[ ! -d "$STATE/mysql/mysql" ]]; then
            mariadb-install-db --no-defaults --user=mysql --datadir="$STATE/mysql" \
                --auth-root-authentication-method=socket >"$LOG/mariadb-install.log" 2>&1 ||
                die "mariadb-install-db failed; see $LOG/mariadb-install.log"
        fi
        launch mariadbd "$RUN/mysqld/mariadbd.pid" mariadbd_background
    fi
    wait_for 60 db_ok || die "MariaDB does not answer on $DB_SOCKET; see $LOG/mysql/mariadbd.log"
    mariadb --socket="$DB_SOCKET" <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

# Make the cluster, the account and its users known to slurmdbd (each step only when missing).
setup_accounting() {
    local user
    wait_for 60 sacctmgr -n list cluster || die "slurmdbd does not answer; see $LOG/slurm/slurmdbd.log"
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
        sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" ||
        sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="prunebench CI" Organization=ci \
            >/dev/null
    for user in root $EXTRA_USERS; do
        id "$user" >/dev/null 2>&1 || die "user '$user' (PRUNEBENCH_SLURM_USERS) does not exist"
        sacctmgr -n -P list assoc user="$user" account="$ACCOUNT" format=user | grep -qx "$user" ||
            sacctmgr -i add user "$user" Account="$ACCOUNT" Cluster="$CLUSTER" >/dev/null
    done
}

node_idle() { [[ "$(sinfo -h -n "$NODE" -o %T)" == idle ]]; }

up() {
    local t0=$SECONDS
    [[ $(id -u) == 0 ]] || die "'up' must run as root (it installs packages and starts daemons)"
    mkdir -p "$ETC" "$RUN/munge" "$RUN/mysqld" "$LOG/munge" "$LOG/mysql" "$LOG/slurm" "$PIDS" \
        "$STATE/munge-seed" "$STATE/mysql" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
    chmod 755 "$STATE"
    install_packages
    chown munge:munge "$RUN/munge" "$LOG/munge" "$STATE/munge-seed"
    chmod 700 "$STATE/munge-seed"
    chown mysql:mysql "$RUN/mysqld" "$STATE/mysql" "$LOG/mysql"
    chown slurm:slurm "$STATE/spool/slurmctld" "$LOG/slurm"
    if [[ ! -s "$ETC/db.pass" ]]; then
        head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$ETC/db.pass"
        chmod 600 "$ETC/db.pass"
    fi
    DB_PASS=$(<"$ETC/db.pass")
    write_configs
    link_default_conf

    start_munge
    start_mariadb
    if ! running_pid slurmdbd >/dev/null; then
        launch slurmdbd "$RUN/slurmdbd.pid" slurmdbd
    fi
    setup_accounting
    if ! running_pid slurmctld >/dev/null; then
        launch slurmctld "$RUN/slurmctld.pid" slurmctld -f "$SLURM_CONF"
    fi
    wait_for 30 bash -c 'scontrol ping | grep -q UP' ||
        die "slurmctld does not answer; see $LOG/slurm/slurmctld.log"
    if ! running_pid slurmd >/dev/null; then
        launch slurmd "$RUN/slurmd.pid" slurmd -f "$SLURM_CONF"
    fi
    # A drain recorded in slurmctld's state (an earlier configuration) survives restarts: resume once.
    # A node that is still misconfigured drains again and fails the wait below with the reason.
    wait_for 30 bash -c "sinfo -h -n $NODE -o %T | grep -qv unknown" || true
    if [[ "$(sinfo -h -n "$NODE" -o %T)" == drain* ]]; then
        say "resuming node $NODE (was drained: $(sinfo -h -n "$NODE" -o %E))"
        scontrol update NodeName="$NODE" State=RESUME
    fi
    if ! wait_for 60 node_idle; then
        scontrol show node "$NODE" >&2 || true
        tail -n 20 "$LOG/slurm/slurmctld.log" "$LOG/slurm/slurmd.log" >&2 || true
        die "node $NODE is '$(sinfo -h -n "$NODE" -o %T)', not idle, after 60 s"
    fi
    say "ready in $((SECONDS - t0)) s: partition $PARTITION, account $ACCOUNT"
}

status() {
    local name pid
    for name in "${DAEMONS[@]}"; do
        if pid=$(running_pid "$name"); then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
    done
    if [[ -f "$SLURM_CONF" ]] && running_pid slurmctld >/dev/null; then sinfo; fi
}

case "${1:-}" in
    up) up ;;
    down)
        [[ $(id -u) == 0 ]] || die "'down' must run as root"
        stop_daemons
        unlink_default_conf
        ;;
    purge)
        [[ $(id -u) == 0 ]] || die "'purge' must run as root"
        stop_daemons
        unlink_default_conf
        rm -rf "$STATE"
        ;;
    status) status ;;
    *)
        echo "usage: $0 up|down|status|purge" >&2
        exit 2
        ;;
esac
