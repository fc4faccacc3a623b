#!/usr/bin/env bash
# Benchmark supamount against s3fs, rclone mount and the raw-SDK ceiling (supamount-bench),
# all on the same bucket of the built-in local S3 server on 127.0.0.1.
#
#   bash bench/run.sh                                  # default: 1 GiB files, 3 runs
#   BENCH_SIZE_MIB=256 BENCH_RUNS=1 bash bench/run.sh   # quick check
#
# Settings (environment):
#   BENCH_SIZE_MIB     size of the big sequential read/write file (default 1024); the four
#                      parallel readers read SIZE/4 each
#   BENCH_RUNS         runs per workload; the table shows medians (default 3)
#   BENCH_TOOLS        tools besides the ceiling (default "supamount s3fs rclone")
#   BENCH_CONCURRENCY  requests in flight for the ceiling's GETs and parts (default 4: more
#                      only adds contention on 2 cores)
#   BENCH_TIMEOUT      seconds before one workload counts as failed (default 600)
#   BENCH_WORK         scratch directory, wiped at start; must be on a real disk (default
#                      target/bench/work)
#   BENCH_KEEP=1       keep the server's data after the run
#   BENCH_BUILD=0      measure the release binaries as they are, without building
#
# Needs root: it installs packages with apt-get and drops the page cache between cold runs.
# Results: printed, and written to target/bench/results/latest.md (raw figures in
# results.tsv, tool logs in logs/). Nothing here asserts a timing: it reports figures.

set -uo pipefail
export LC_ALL=C # '.' as the decimal point in $EPOCHREALTIME and awk

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIZE_MIB=${BENCH_SIZE_MIB:-1024}
RUNS=${BENCH_RUNS:-3}
TOOLS=${BENCH_TOOLS:-supamount s3fs rclone}
CONC=${BENCH_CONCURRENCY:-4}
TIMEOUT=${BENCH_TIMEOUT:-600}
WORK=${BENCH_WORK:-$REPO/target/bench/work}
OUT=$REPO/target/bench/results
BUCKET=bench
PAR_MIB=$((SIZE_MIB / 4))
# 100 MiB as asked, but never more than the big file, so a quick run stays quick.
APPEND_BASE_MIB=$((SIZE_MIB < 100 ? SIZE_MIB : 100))
SMALL_COUNT=1000
LIST_COUNT=10000

say() { printf '== %s\n' "$*" >&2; }
die() {
    printf 'bench: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) == 0 ]] || die "run as root: packages are installed with apt-get and cold runs drop the page cache"
[[ $SIZE_MIB =~ ^[0-9]+$ && $SIZE_MIB -ge 4 ]] || die "BENCH_SIZE_MIB must be a number >= 4"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a number >= 1"

# ---------------------------------------------------------------------------------------
# Tools and build

missing=()
command -v s3fs >/dev/null || missing+=(s3fs)
command -v rclone >/dev/null || missing+=(rclone)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v fio >/dev/null || missing+=(fio)
# The build needs these (fuser links libfuse3).
dpkg -s libfuse3-dev >/dev/null 2>&1 || missing+=(libfuse3-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi

if [[ ${BENCH_BUILD:-1} != 0 ]]; then
    say "building (cargo build --release)"
    (cd "$REPO" && cargo build --release --bins) || die "cargo build --release failed"
fi
SUPAMOUNT=$REPO/target/release/supamount
BENCH=$REPO/target/release/supamount-bench
[[ -x $SUPAMOUNT && -x $BENCH ]] || die "no release binaries in target/release"

# ---------------------------------------------------------------------------------------
# Scratch space, cleanup

MNT=""
MOUNT_PID=""
SERVER_PID=""

# Unmount and reap the current mount's process; never leaves a mount behind.
unmount_current() {
    [[ -n $MNT ]] || return 0
    if mountpoint -q "$MNT"; then
        fusermount3 -u "$MNT" 2>/dev/null || { sleep 2 && fusermount3 -u "$MNT" 2>/dev/null; } ||
            fusermount3 -uz "$MNT" 2>/dev/null
    fi
    if [[ -n $MOUNT_PID ]]; then
        stop_pid "$MOUNT_PID" 120
    fi
    MNT=""
    MOUNT_PID=""
}

# Wait up to $2 seconds for our child $1 to exit on its own (an unmount lets uploads in
# flight finish), then TERM, then KILL; reap it either way.
stop_pid() {
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}

cleanup() {
    unmount_current
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        stop_pid "$SERVER_PID" 10
    fi
    # The keys die with the server, but a key file is not left lying around either way.
    rm -f "$WORK/s3fs.passwd" "$WORK/rclone.conf"
    if [[ ${BENCH_KEEP:-0} != 1 && -d $WORK/data ]]; then
        rm -rf --one-file-system "$WORK/data" "$WORK/local"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A mount left by an interrupted earlier run would make the wipe below delete through it.
while read -r _ mp _; do
    [[ $mp == "$WORK"/* ]] && { fusermount3 -u "$mp" 2>/dev/null || fusermount3 -uz "$mp"; }
done </proc/mounts
rm -rf --one-file-system "$WORK"
mkdir -p "$WORK"/{data,local,log,mnt,cache} "$OUT" || die "cannot create $WORK"
TSV=$OUT/results.tsv
: >"$TSV"
fstype=$(stat -f -c %T "$WORK")
[[ $fstype == tmpfs ]] && say "note: $WORK is on tmpfs; the server's data is then in memory"

# Throwaway keys for this run: the server accepts only these, the clients read them from the
# environment or a 0600 file, never from argv.
AWS_ACCESS_KEY_ID=bench$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
AWS_SECRET_ACCESS_KEY=$(od -An -N20 -tx1 /dev/urandom | tr -d ' \n')
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL AWS_REGION

# ---------------------------------------------------------------------------------------
# Server and test data

say "starting the local S3 server (data in $WORK/data, $fstype)"
"$SUPAMOUNT" server --data-dir "$WORK/data" --listen 127.0.0.1:0 --bucket "$BUCKET" \
    --log-level warn >"$WORK/log/server.out" 2>"$WORK/log/server.log" &
SERVER_PID=$!
EP=""
for _ in $(seq 100); do
    EP=$(sed -n 's/^endpoint=//p' "$WORK/log/server.out")
    [[ -n $EP ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || die "the server exited: $(tail -n 3 "$WORK/log/server.log")"
    sleep 0.1
done
[[ -n $EP ]] || die "the server printed no endpoint"
[[ $EP == http://127.0.0.1:* ]] || die "unexpected endpoint $EP"
say "server at $EP"

S3=(--endpoint "$EP" --bucket "$BUCKET" --region local)
PASSWD=$WORK/s3fs.passwd
(umask 077 && printf '%s:%s:%s\n' "$BUCKET" "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$PASSWD")
# list_version = 2: the local server answers ListObjects (v1) with 501 NotImplemented.
RCLONE_CONF=$WORK/rclone.conf
(umask 077 && cat >"$RCLONE_CONF" <<EOF
[bench]
type = s3
provider = Other
env_auth = false
access_key_id = $AWS_ACCESS_KEY_ID
secret_access_key = $AWS_SECRET_ACCESS_KEY
endpoint = $EP
region = local
force_path_style = true
list_version = 2
EOF
)

say "seeding: big ${SIZE_MIB} MiB, 4 x ${PAR_MIB} MiB, ${SMALL_COUNT} x 4 KiB, ${LIST_COUNT} keys"
"$BENCH" seed "${S3[@]}" --prefix small/f --count "$SMALL_COUNT" --size 4096 \
    --big-key big --big-size $((SIZE_MIB << 20)) >/dev/null || die "seeding failed"
for i in 0 1 2 3; do
    "$BENCH" put "${S3[@]}" --key "par/r$i" --size $((PAR_MIB << 20)) >/dev/null || die "seeding failed"
done
"$BENCH" seed "${S3[@]}" --prefix dir10k/k --count "$LIST_COUNT" --size 16 >/dev/null ||
    die "seeding failed"
# Local sources of the write workloads, on the same disk as the server's data.
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/local/big"
head -c 1048576 /dev/urandom >"$WORK/local/1mib"
mkdir -p "$WORK/local/small"
head -c $((SMALL_COUNT * 4096)) /dev/urandom | (cd "$WORK/local/small" && split -b 4096 -d -a 5 - f)

# ---------------------------------------------------------------------------------------
# Measuring

A="a. seq read ${SIZE_MIB} MiB, cold"
B="b. seq read ${SIZE_MIB} MiB, warm"
C="c. 4 readers x ${PAR_MIB} MiB"
CR="c. peak RSS during (c)"
D="d. read ${SMALL_COUNT} x 4 KiB (cat)"
BN="b. MiB sent over loopback during (b)"
E="e. ls -l of ${LIST_COUNT} keys"
E2="e. the same ls -l again, 2 s later"
J="j. ${SMALL_COUNT} random 4 KiB reads of the big file"
JN="j. MiB sent over loopback during (j)"
F="f. seq write ${SIZE_MIB} MiB (cp, to close)"
G="g. create ${SMALL_COUNT} x 4 KiB (cp)"
H="h. rm -r ${SMALL_COUNT} files"
I="i. append 1 MiB to ${APPEND_BASE_MIB} MiB"

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$TSV"; }
fail() { record "$1" "$2" "$3" fail "$4"; }

drop_caches() { sync && echo 3 >/proc/sys/vm/drop_caches; }

# Bytes that crossed the loopback interface so far: every request and response between the
# tools and the server (nothing else of note runs on it during a workload).
lo_bytes() { awk '$1 == "lo:" { print $2 }' /proc/net/dev; }
# MiB sent over loopback since lo_bytes printed $1.
lo_mib_since() { awk -v a="$1" -v b="$(lo_bytes)" 'BEGIN { printf "%.1f", (b - a) / 1048576 }'; }

# run_timed CMD...: run CMD under the timeout; T = wall seconds, OUT_TXT = its stdout,
# WHY = the reason when it failed (status 1).
run_timed() {
    local t0 rc
    t0=$EPOCHREALTIME
    timeout -k 10 "$TIMEOUT" "$@" >"$WORK/out" 2>"$WORK/err"
    rc=$?
    T=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    OUT_TXT=$(<"$WORK/out")
    case $rc in
    0) return 0 ;;
    124 | 137) WHY="timed out after ${TIMEOUT}s" ;;
    *) WHY="exit $rc: $(grep -v '^ *$' "$WORK/err" | tail -n 1 | cut -c1-120)" ;;
    esac
    return 1
}

field() { tr ' ' '\n' <<<"$OUT_TXT" | sed -n "s/^$1=//p"; }
mbps() { awk -v b="$1" -v t="$2" 'BEGIN { printf "%.1f", b / 1e6 / t }'; }
# Bytes dd says it copied (its last "N bytes ... copied" line).
dd_bytes() { awk '/bytes/ && /copied/ { n = $1 } END { print n + 0 }' "$WORK/err"; }

# One ceiling measurement: supamount-bench SUBCOMMAND ARGS, recorded from its own clock.
ceil() {
    local w=$1 run=$2 kind=$3
    shift 3
    if run_timed "$BENCH" "$@"; then
        case $kind in
        mbps) record "$w" ceiling "$run" mbps "$(field mbps)" ;;
        secs) record "$w" ceiling "$run" secs "$(field seconds)" ;;
        esac
    else
        fail "$w" ceiling "$run" "$WHY"
    fi
}

run_ceiling() {
    local run=$1
    local lo
    drop_caches
    ceil "$A" "$run" mbps get "${S3[@]}" --key big --concurrency "$CONC"
    lo=$(lo_bytes)
    ceil "$B" "$run" mbps get "${S3[@]}" --key big --concurrency "$CONC"
    record "$BN" ceiling "$run" net "$(lo_mib_since "$lo")"
    drop_caches
    if run_timed "$BENCH" get "${S3[@]}" --key par/r0 --key par/r1 --key par/r2 --key par/r3 \
        --concurrency "$CONC"; then
        record "$C" ceiling "$run" mbps "$(field mbps)"
        record "$CR" ceiling "$run" rss "$(field peak_rss_mib)"
    else
        fail "$C" ceiling "$run" "$WHY"
        fail "$CR" ceiling "$run" "$WHY"
    fi
    drop_caches
    ceil "$D" "$run" secs small-gets "${S3[@]}" --prefix small/
    ceil "$E" "$run" secs list "${S3[@]}" --prefix dir10k/
    ceil "$E2" "$run" secs list "${S3[@]}" --prefix dir10k/
    drop_caches
    lo=$(lo_bytes)
    ceil "$J" "$run" secs random-gets "${S3[@]}" --key big --count "$SMALL_COUNT" --size 4096
    record "$JN" ceiling "$run" net "$(lo_mib_since "$lo")"
    ceil "$F" "$run" mbps put "${S3[@]}" --key w_big --size $((SIZE_MIB << 20)) --concurrency "$CONC"
    ceil "$G" "$run" secs small-puts "${S3[@]}" --prefix c/f --count "$SMALL_COUNT"
    ceil "$H" "$run" secs deletes "${S3[@]}" --prefix c/
    if "$BENCH" put "${S3[@]}" --key f100 --size $((APPEND_BASE_MIB << 20)) >/dev/null; then
        ceil "$I" "$run" secs append "${S3[@]}" --key f100 --concurrency "$CONC"
    else
        fail "$I" ceiling "$run" "seeding f100 failed"
    fi
    "$BENCH" deletes "${S3[@]}" --prefix w_big >/dev/null
}

# mount_tool TOOL: a fresh mount of the bucket at $WORK/mnt/TOOL, in the foreground of a
# background job so that its PID is ours to measure and reap. Sets MNT, MOUNT_PID; on
# failure WHY.
mount_tool() {
    local tool=$1 log=$WORK/log/$1.log i
    MNT=$WORK/mnt/$tool
    mkdir -p "$MNT"
    rm -rf "$WORK/cache/$tool"
    mkdir -p "$WORK/cache/$tool"
    printf -- '--- mount %s\n' "$(date +%T)" >>"$log"
    case $tool in
    supamount)
        "$SUPAMOUNT" --foreground --endpoint-url "$EP" --region local \
            --cache-dir "$WORK/cache/$tool" --log-level warn "$BUCKET" "$MNT" 2>>"$log" &
        ;;
    s3fs)
        # Defaults otherwise (no use_cache: its writes are staged in a temp file); dbglevel=err
        # so that the log says why a workload failed.
        # listobjectsv2: the local server answers ListObjects (v1) with 501 NotImplemented.
        s3fs "$BUCKET" "$MNT" -f \
            -o "url=$EP,use_path_request_style,passwd_file=$PASSWD,endpoint=local,listobjectsv2,dbglevel=err" \
            >>"$log" 2>&1 &
        ;;
    rclone)
        # --vfs-cache-mode off is rclone's default, said out loud. rclone 1.60 refuses to start
        # when AWS_CA_BUNDLE is set ("unsupported transport"), and no CA matters over http.
        env -u AWS_CA_BUNDLE rclone mount "bench:$BUCKET" "$MNT" --config "$RCLONE_CONF" --vfs-cache-mode off \
            --log-level NOTICE >>"$log" 2>&1 &
        ;;
    *)
        WHY="unknown tool $tool"
        return 1
        ;;
    esac
    MOUNT_PID=$!
    for ((i = 0; i < 300; i++)); do
        mountpoint -q "$MNT" && return 0
        if ! kill -0 "$MOUNT_PID" 2>/dev/null; then
            wait "$MOUNT_PID" 2>/dev/null
            WHY="mount failed: $(grep -v '^---' "$log" | tail -n 1 | cut -c1-120)"
            MOUNT_PID=""
            return 1
        fi
        sleep 0.1
    done
    WHY="not mounted after 30 s"
    unmount_current
    return 1
}

# ls -l of the 10,000 keys, recorded as workload $1.
list_dir() {
    local w=$1 tool=$2 run=$3 n
    if run_timed ls -l "$MNT/dir10k"; then
        n=$(grep -c '^-' "$WORK/out")
        if ((n == LIST_COUNT)); then
            record "$w" "$tool" "$run" secs "$T"
        else
            fail "$w" "$tool" "$run" "listed $n of $LIST_COUNT files"
        fi
    else
        fail "$w" "$tool" "$run" "$WHY"
    fi
}

# Random 4 KiB reads across the big file (fio, psync, the page cache dropped first), with the
# bytes they made the mount fetch.
random_reads() {
    local tool=$1 run=$2 lo
    drop_caches
    lo=$(lo_bytes)
    if run_timed fio --name=random --filename="$MNT/big" --readonly --rw=randread --bs=4k \
        --io_size=$((SMALL_COUNT * 4))k --ioengine=psync --randrepeat=1 --invalidate=1 \
        --output-format=terse; then
        record "$J" "$tool" "$run" secs "$T"
        record "$JN" "$tool" "$run" net "$(lo_mib_since "$lo")"
    else
        fail "$J" "$tool" "$run" "$WHY"
        fail "$JN" "$tool" "$run" "$WHY"
    fi
}

# Sequential read of MNT/big with dd, recorded as workload $1.
read_big() {
    local w=$1 tool=$2 run=$3 got
    if run_timed dd if="$MNT/big" of=/dev/null bs=1M; then
        got=$(dd_bytes)
        if ((got == SIZE_MIB << 20)); then
            record "$w" "$tool" "$run" mbps "$(mbps "$got" "$T")"
        else
            fail "$w" "$tool" "$run" "read $got bytes, expected $((SIZE_MIB << 20))"
        fi
    else
        fail "$w" "$tool" "$run" "$WHY"
    fi
}

# Four dd readers of different objects at once; peak RSS of the mount process from VmHWM
# (the mount is fresh, so the high-water mark belongs to this workload and start-up).
four_readers() {
    local tool=$1 run=$2 i rc=0 t0 t got=0 hwm pids=()
    t0=$EPOCHREALTIME
    for i in 0 1 2 3; do
        timeout -k 10 "$TIMEOUT" dd if="$MNT/par/r$i" of=/dev/null bs=1M 2>"$WORK/err$i" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do
        wait "$i" || rc=$?
    done
    t=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
    for i in 0 1 2 3; do
        got=$((got + $(awk '/bytes/ && /copied/ { n = $1 } END { print n + 0 }' "$WORK/err$i")))
    done
    hwm=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$MOUNT_PID/status" 2>/dev/null)
    if ((rc == 0 && got == 4 * (PAR_MIB << 20))); then
        record "$C" "$tool" "$run" mbps "$(mbps "$got" "$t")"
    else
        fail "$C" "$tool" "$run" "exit $rc, read $got of $((4 * (PAR_MIB << 20))) bytes: $(grep -hv '^ *$' "$WORK"/err[0-3] | grep -v 'records\|copied' | tail -n 1 | cut -c1-100)"
    fi
    if [[ -n $hwm ]]; then
        record "$CR" "$tool" "$run" rss "$hwm"
    else
        fail "$CR" "$tool" "$run" "no /proc/$MOUNT_PID/status"
    fi
}

run_tool() {
    local tool=$1 run=$2 size w lo

    # Mount 1: listing and small reads first (nothing cached yet), then the big file.
    drop_caches
    if ! mount_tool "$tool"; then
        for w in "$E" "$E2" "$D" "$A" "$B" "$BN"; do fail "$w" "$tool" "$run" "$WHY"; done
    else
        list_dir "$E" "$tool" "$run"
        # Past every tool's attribute cache time (supamount: 1 s), so the listing is asked
        # for again.
        sleep 2
        list_dir "$E2" "$tool" "$run"
        # The glob (readdir) is part of the workload, as in the ceiling's listing.
        # shellcheck disable=SC2016 # expanded by the inner shell
        if run_timed bash -c 'cat "$1"/small/* | wc -c' _ "$MNT"; then
            if ((OUT_TXT == SMALL_COUNT * 4096)); then
                record "$D" "$tool" "$run" secs "$T"
            else
                fail "$D" "$tool" "$run" "read $OUT_TXT bytes, expected $((SMALL_COUNT * 4096))"
            fi
        else
            fail "$D" "$tool" "$run" "$WHY"
        fi
        drop_caches
        read_big "$A" "$tool" "$run"
        lo=$(lo_bytes)
        read_big "$B" "$tool" "$run"
        record "$BN" "$tool" "$run" net "$(lo_mib_since "$lo")"
        unmount_current
    fi

    # Mount 2: parallel readers and memory, on a fresh process; then random reads.
    drop_caches
    if ! mount_tool "$tool"; then
        for w in "$C" "$CR" "$J" "$JN"; do fail "$w" "$tool" "$run" "$WHY"; done
    else
        four_readers "$tool" "$run"
        random_reads "$tool" "$run"
        unmount_current
    fi

    # Mount 3: writes. The append target is rewritten first so every run appends to the
    # same 100 MiB, and the local source is read once so its disk does not count.
    if ! "$BENCH" put "${S3[@]}" --key f100 --size $((APPEND_BASE_MIB << 20)) >/dev/null; then
        fail "$I" "$tool" "$run" "seeding f100 failed"
    fi
    cat "$WORK/local/big" >/dev/null
    if ! mount_tool "$tool"; then
        for w in "$F" "$G" "$H" "$I"; do fail "$w" "$tool" "$run" "$WHY"; done
        return
    fi
    if run_timed cp "$WORK/local/big" "$MNT/w_big"; then
        size=$(stat -c %s "$MNT/w_big" 2>/dev/null)
        if [[ $size == $((SIZE_MIB << 20)) ]]; then
            record "$F" "$tool" "$run" mbps "$(mbps "$size" "$T")"
        else
            fail "$F" "$tool" "$run" "size after close: ${size:-none}"
        fi
    else
        fail "$F" "$tool" "$run" "$WHY"
    fi
    rm -f "$MNT/w_big"

    if ! mkdir "$MNT/c" 2>"$WORK/err"; then
        fail "$G" "$tool" "$run" "mkdir: $(tail -n 1 "$WORK/err")"
        fail "$H" "$tool" "$run" "no directory to remove"
    else
        if run_timed cp -t "$MNT/c" "$WORK"/local/small/*; then
            n=$(find "$MNT/c" -type f | wc -l)
            if ((n == SMALL_COUNT)); then
                record "$G" "$tool" "$run" secs "$T"
            else
                fail "$G" "$tool" "$run" "$n of $SMALL_COUNT files listed afterwards"
            fi
        else
            fail "$G" "$tool" "$run" "$WHY"
        fi
        if run_timed rm -r "$MNT/c"; then
            if [[ -e $MNT/c ]]; then
                fail "$H" "$tool" "$run" "the directory is still there"
            else
                record "$H" "$tool" "$run" secs "$T"
            fi
        else
            fail "$H" "$tool" "$run" "$WHY"
        fi
    fi

    # shellcheck disable=SC2016 # expanded by the inner shell
    if run_timed bash -c 'cat "$1" >>"$2"' _ "$WORK/local/1mib" "$MNT/f100"; then
        size=$(stat -c %s "$MNT/f100" 2>/dev/null)
        if [[ $size == $(((APPEND_BASE_MIB + 1) << 20)) ]]; then
            record "$I" "$tool" "$run" secs "$T"
        else
            fail "$I" "$tool" "$run" "size after close: ${size:-none}"
        fi
    else
        fail "$I" "$tool" "$run" "$WHY"
    fi
    unmount_current
    # Whatever a failed workload left behind must not change the next run.
    "$BENCH" deletes "${S3[@]}" --prefix c/ >/dev/null
    "$BENCH" deletes "${S3[@]}" --prefix w_big >/dev/null
}

started=$EPOCHREALTIME
for ((run = 1; run <= RUNS; run++)); do
    for tool in ceiling $TOOLS; do
        say "run $run/$RUNS: $tool"
        if [[ $tool == ceiling ]]; then
            run_ceiling "$run"
        else
            run_tool "$tool" "$run"
        fi
    done
done
elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')

# ---------------------------------------------------------------------------------------
# Report

versions="supamount $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null)$(git -C "$REPO" diff --quiet HEAD 2>/dev/null || echo +uncommitted)"
command -v s3fs >/dev/null && versions+=", s3fs $(s3fs --version 2>/dev/null | sed -n '1s/.*V\([0-9.]*\).*/\1/p')"
command -v rclone >/dev/null && versions+=", rclone $(rclone version 2>/dev/null | sed -n '1s/^rclone //p')"
{
    printf '# supamount benchmark, %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    # shellcheck disable=SC2016 # literal backquotes: markdown code
    printf 'Command: `BENCH_SIZE_MIB=%s BENCH_RUNS=%s bash bench/run.sh`; medians of %s run(s); %s cores, %s GiB RAM; %s; server data on %s; measuring took %s s.\n\n' \
        "$SIZE_MIB" "$RUNS" "$RUNS" "$(nproc)" "$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)" \
        "$versions" "$fstype" "$elapsed"
    "$BENCH" report "$TSV" \
        --note "Figures: MB/s = 10^6 bytes/s (higher is better), s = seconds (lower is better), MiB = peak resident memory of the mount process (VmHWM; for the ceiling, of supamount-bench)." \
        --note "(x) = speed as a fraction of the raw-SDK ceiling: 1.00 as fast, 0.25 four times slower; for memory, a plain multiple of the ceiling's." \
        --note "Ceiling = supamount-bench (aws-sdk-s3) against the same server: ranged 8 MiB GETs and multipart 8 MiB parts, $CONC in flight; (d) lists then GETs each key, (g)/(h) sequential PUTs/DELETEs, (i) GET of the old object plus multipart PUT of old + 1 MiB (the least without server-side append), (j) one 4 KiB ranged GET per read." \
        --note "MiB sent = bytes through the loopback interface (requests, responses and their headers) during the workload: what a tool fetched, against what the ceiling needs for the same reads." \
        --note "Cold = fresh mount after sync; echo 3 > /proc/sys/vm/drop_caches. (e) and (d) run first on a fresh mount; (c), then (j) with the page cache dropped, on their own fresh mount. Writes are timed until cp/cat returns, i.e. including close." \
        --note "rclone mount with --vfs-cache-mode off (its default), which refuses appends (O_APPEND without O_TRUNC); s3fs with its defaults, whose append of a large file copies the old parts with UploadPartCopy, which the local server answers with 501 NotImplemented (see logs/s3fs.log). mountpoint-s3 is not measured: it has no Debian package and prebuilt binaries cannot be downloaded here." \
        --note "The machine is shared (other builds run on its 2 cores) and the server runs on it too: figures are noisy, compare ratios rather than absolutes."
} >"$OUT/latest.md" || die "rendering the report failed"
cp "$WORK"/log/*.log "$OUT/" 2>/dev/null
mkdir -p "$OUT/logs" && mv "$OUT"/*.log "$OUT/logs/" 2>/dev/null
echo
cat "$OUT/latest.md"
echo
say "written to $OUT/latest.md (raw figures: $TSV, logs: $OUT/logs/)"
