#!/usr/bin/env bash
# Build the libFuzzer targets and run each for SECONDS, one after another on one core.
#
#   Fuzz/run.sh SECONDS [TARGET...]      (targets: png dicom safetensors npy torch recipe manifest
#                                         xrpkg tokenizer reportcsv meteor; default: all)
#
# Every target starts from its seed corpus: small files from fixtures/ and recipes/ (listed
# below, copied at run time so nothing is kept twice), Fuzz/corpus/<target>/ (seeds the
# repository has no fixture for, and every input that once crashed xrlab), and what earlier runs
# on this machine found (Fuzz/.work/<target>/corpus). A crash, a hang over 20 s or a memory
# blow-up over 2 GB is a finding: the input is written to Fuzz/.work/<target>/artifacts/ and
# the script exits 1. Per target it prints wall and CPU seconds, executions, coverage (libFuzzer's
# final cov / ft), corpus size and crashes. (Leak reports are off: LeakSanitizer flags
# allocations inside swift-foundation and Swift collections on ordinary inputs; growth still
# trips -rss_limit_mb.)
#
# Environment: FUZZ_NO_BUILD=1 skips the build; FUZZ_BUDGET=cpu counts SECONDS as CPU time; FUZZ_ARGS adds libFuzzer flags (e.g. -seed=1);
# FUZZ_WORK moves the work folder (default Fuzz/.work).
set -euo pipefail
cd "$(dirname "$0")"
fuzz=$(pwd)
root=$(cd .. && pwd)

all="png dicom safetensors npy torch recipe manifest xrpkg tokenizer reportcsv meteor"
[ $# -ge 1 ] || { echo "usage: Fuzz/run.sh SECONDS [TARGET...]  (targets: $all)" >&2; exit 2; }
seconds=$1; shift
# FUZZ_BUDGET=cpu makes SECONDS a CPU-time budget per target (the fuzzer runs until it has
# used that much CPU, so a campaign on a shared machine still gets its full time); the
# default is wall time.
budget=${FUZZ_BUDGET:-wall}
case $budget in wall) limit=$seconds ;; cpu) limit=$((seconds * 20)) ;; *) echo "FUZZ_BUDGET must be wall or cpu" >&2; exit 2 ;; esac
targets=${*:-$all}
for t in $targets; do
    case " $all " in *" $t "*) ;; *) echo "unknown target '$t' (targets: $all)" >&2; exit 2 ;; esac
done

if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
    # The Swift modules get coverage and ASan from -sanitize; the C shims (libpng / libjpeg
    # guards, CPU helpers) from -Xcc. System libraries (libpng, libarchive, zlib, OpenJPEG,
    # libjpeg, libyaml) are not instrumented: they are exercised, not measured.
    swift build --package-path "$fuzz" -c release \
        -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
        -Xcc -fsanitize=fuzzer-no-link,address 2>&1 | grep -vE "__asan_extra_spill_area|^\[[0-9]+/[0-9]+\]" || true
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "fuzz build failed" >&2; exit 1; }
fi
bin=$(swift build --package-path "$fuzz" -c release --show-bin-path)

# Seed files from the repository, per target.
seeds_of() {
    case $1 in
        png) ls "$root"/fixtures/preprocess/*.png ;;
        dicom) ;;  # Fuzz/corpus/dicom (written by Fuzz/make_dicom_seeds.py)
        safetensors) ls "$root"/fixtures/tensor/*.safetensors ;;
        npy) ls "$root"/fixtures/tensor/*.npy "$root"/fixtures/dicom/j2k_8.npy "$root"/fixtures/dicom/jpll_p6_7.npy ;;
        torch) ls "$root"/fixtures/torch/*.pt "$root"/fixtures/torch/*.pth "$root"/fixtures/torch/*.bin ;;
        recipe) ls "$root"/recipes/*.yaml ;;
        manifest) ls "$root"/fixtures/packages/format1.predictions.csv ;;
        xrpkg) ls "$root"/fixtures/packages/format1.xrpkg ;;
        tokenizer) ls "$root"/fixtures/text/bpe/tokenizer.json "$root"/fixtures/text/bpe/xrlab_tokenizer.json ;;
        reportcsv) ;;  # Fuzz/corpus/reportcsv (the fixture corpus is 88 KB; a slice of it is kept there)
        meteor) ;;     # assembled below
    esac
}

export SWIFT_BACKTRACE=enable=no   # libFuzzer and ASan print the stack; the Swift backtracer only slows a crash down
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"   # see the header on leaks
# Targets that read a path write each input to a scratch folder: in memory when /dev/shm exists.
[ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm
printf '%-12s %7s %7s %11s %7s %7s %7s  %s\n' target wall_s cpu_s executions cov ft corpus crashes
failed=0
for t in $targets; do
    w="${FUZZ_WORK:-$fuzz/.work}/$t"
    mkdir -p "$w/corpus" "$w/artifacts"
    rm -rf "$w/seeds"; mkdir -p "$w/seeds"
    for f in $(seeds_of "$t"); do cp "$f" "$w/seeds/"; done
    if [ "$t" = xrpkg ]; then
        # The archive uncompressed too: mutations of a plain tar reach the manifest and heads.
        gzip -dc "$root/fixtures/packages/format1.xrpkg" > "$w/seeds/format1.tar"
    fi
    if [ "$t" = meteor ]; then
        # The five resource files in one input (the target splits them at its separator).
        m="$root/fixtures/text/meteor"
        { cat "$m/function/english.words"; printf '\n--xrlab-fuzz-part--\n'
          cat "$m/synonym/english.synsets"; printf '\n--xrlab-fuzz-part--\n'
          cat "$m/synonym/english.exceptions"; printf '\n--xrlab-fuzz-part--\n'
          cat "$m/nonbreaking/english.prefixes"; printf '\n--xrlab-fuzz-part--\n'
          cat "$m/data/paraphrase-en.gz"; } > "$w/seeds/resources"
    fi
    dirs=("$w/corpus" "$w/seeds")
    [ -d "$fuzz/corpus/$t" ] && dirs+=("$fuzz/corpus/$t")
    dict=()
    [ -f "$fuzz/dict/$t.dict" ] && dict=("-dict=$fuzz/dict/$t.dict")
    before=$(ls "$w/artifacts" | grep -vc '^slow-unit-' || true)
    log="$w/last.log"
    set +e
    # shellcheck disable=SC2086
    /usr/bin/time -f '%e %U %S' -o "$w/time" "$bin/fuzz_$t" -max_total_time="$limit" -rss_limit_mb=2048 -timeout=20 \
        -print_final_stats=1 -detect_leaks=0 -artifact_prefix="$w/artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} "${dirs[@]}" > "$log" 2>&1 &
    timer=$!
    if [ "$budget" = cpu ]; then
        # Stop the fuzzer (SIGINT: libFuzzer prints its final stats and exits 72) once its
        # user + system time reaches SECONDS, however long that takes on a busy machine.
        tick=$(getconf CLK_TCK)
        while kill -0 "$timer" 2>/dev/null; do
            sleep 5
            child=$(pgrep -P "$timer" | head -1 || true)
            [ -n "$child" ] || continue
            used=$(awk -v t="$tick" '{printf "%d", ($14 + $15) / t}' "/proc/$child/stat" 2>/dev/null || echo 0)
            if [ "$used" -ge "$seconds" ]; then kill -INT "$child" 2>/dev/null || true; fi
        done
    fi
    wait "$timer"
    status=$?
    [ "$budget" = cpu ] && [ "$status" -eq 72 ] && status=0
    set -e
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+$' || echo "?")
    last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1 || true)
    cov=$(echo "$last" | grep -oE 'cov: [0-9]+' | grep -oE '[0-9]+' || echo "?")
    ft=$(echo "$last" | grep -oE 'ft: [0-9]+' | grep -oE '[0-9]+' || echo "?")
    corp=$(echo "$last" | grep -oE 'corp: [0-9]+' | grep -oE '[0-9]+' || echo "?")
    wall=$(tail -1 "$w/time" | awk '{printf "%.0f", $1}' 2>/dev/null || echo "?")
    cpu=$(tail -1 "$w/time" | awk '{printf "%.0f", $2 + $3}' 2>/dev/null || echo "?")
    # Slow-unit files are not findings: libFuzzer writes one for any input whose run took over 10 s
    # of wall time, which a starved process on a busy machine reaches with a 5 ms input. Hangs
    # (timeout-*), crashes and memory blow-ups (oom-*) are.
    crashes=$(( $(ls "$w/artifacts" | grep -vc '^slow-unit-' || true) - before ))
    slow=$(ls "$w/artifacts" | grep -c '^slow-unit-' || true)
    note=""
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        note="  <- $(ls -t "$w/artifacts" | grep -v '^slow-unit-' | head -1 | sed "s|^|$w/artifacts/|"); log: $log"
        [ "$crashes" -gt 0 ] || crashes="exit $status"
    fi
    [ "$slow" -gt 0 ] && note="$note  ($slow slow-unit file(s): rerun them with $bin/fuzz_$t FILE to time them alone)"
    printf '%-12s %7s %7s %11s %7s %7s %7s  %s\n' "$t" "$wall" "$cpu" "$execs" "$cov" "$ft" "$corp" "$crashes$note"
done
exit "$failed"
