#!/usr/bin/env bash
# Runs everything that judges snix-lower-store, in order:
#   0. cargo fmt --check (workspace and fuzz crate), clippy -D warnings
#      (workspace and fuzz crate; functions over 80 lines fail it), every
#      tracked shell script through shellcheck (scripts/shellcheck) and the
#      module graph (no cycles, scripts/module-graph),
#   1. the workspace's unit tests (cargo test --workspace --release),
#   2. the release build of the daemon and of the end-to-end suite,
#   3. provisioning of the Nix root file systems (cached after the first run),
#   4. the load test (512 connections) and a short fuzz run of every target,
#   5. the Nix file parse checks, nixfmt --check on every .nix file,
#      tests/module-eval.nix evaluated with real Nix, the end-to-end suite
#      against real Nix 2.8 (parity only), 2.26 and 2.34 (and against a real
#      snix-store with tests/snix/run, when SNIX_STORE_BIN and
#      SNIX_NIX_DAEMON_BIN are set), the unit files under real systemd, what
#      systemd 257 does with device tags, nix.conf as nixpkgs' nix.nix renders
#      it, the module's boot defect checks, and tests/nixos-local/run (eval,
#      VM test scripts, render, package, boot, switch, rotate). Must run as
#      root.
# A step that did not run says so: tests/snix/run exits NOT_RUN (77) without
# snix binaries, and its summary line reads "NOT RUN", never "ok".
# Tests that need something absent (Nix's golden files, root for a bind
# mount) fail unless SNIX_ALLOW_SKIP=1 lets them skip.
# Extra arguments go to the end-to-end binary (e.g. --only overlay-ours/gc).
# Exits non-zero if any step fails; prints how long each step took.
set -uo pipefail
cd "$(dirname "$0")/.." || exit

declare -a timings=()
rc=0
# The exit status a step uses to say it did not run (automake's "skipped").
NOT_RUN=77
# step NAME CMD...: runs CMD; the summary says ok / FAILED (status).
# step_may_not_run NAME CMD...: the same, but NOT_RUN is reported as
# "NOT RUN" and does not fail the run.
record() {
  local name=$1 t0=$2 verdict=$3
  timings+=("$(printf '%-16s %4ds  %s' "$name" $((SECONDS - t0)) "$verdict")")
}
step() {
  local name=$1; shift
  local t0=$SECONDS
  echo "==> $name: $*"
  "$@"
  local status=$?
  record "$name" "$t0" "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")"
  return $status
}
step_may_not_run() {
  local name=$1; shift
  local t0=$SECONDS
  echo "==> $name: $*"
  "$@"
  local status=$?
  if [ $status -eq $NOT_RUN ]; then
    record "$name" "$t0" "NOT RUN (see its output above)"
    return 0
  fi
  record "$name" "$t0" "$([ $status -eq 0 ] && echo ok || echo "FAILED ($status)")"
  return $status
}
summary() {
  echo
  echo "==> timings"
  printf '  %s\n' "${timings[@]}"
  echo "  total            $((SECONDS))s"
}
trap summary EXIT

# A persistent CARGO_TARGET_DIR (set by .ci/run) keeps warm runs fast.
tdir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
export SNIX_LOWER_STORE_BIN=$tdir/release/snix-lower-store

step "fmt" cargo fmt --all --check || rc=1
step "fuzz fmt" bash -c 'cd fuzz && cargo fmt --check' || rc=1
# clippy's too_many_lines (threshold 80 in clippy.toml) is enabled in the
# workspace lints and in fuzz/Cargo.toml: no function over 80 lines.
step "clippy" cargo clippy --workspace --all-targets -- -D warnings || rc=1
step "fuzz clippy" bash -c 'cd fuzz && cargo clippy --all-targets -- -D warnings' || rc=1
step "shellcheck" scripts/shellcheck || rc=1
step "module graph" scripts/module-graph --quiet || rc=1
step "unit tests" cargo test --workspace --release || rc=1
step "release build" cargo build --release -p snix-lower-store -p e2e -p testbed --bins --example loadtest || exit 1
step "docs" scripts/check-docs || rc=1   # README <= 250 lines, links, cli.md = --help, mdbook build docs
# 512 concurrent connections; the full 2,000 requests each take ~75 s here,
# so CI runs 400 (LOAD_REQUESTS=2000 for the full issue-7 figure).
step "load test" "$tdir/release/examples/loadtest" 512 "${LOAD_REQUESTS:-400}" || rc=1
step "fuzz smoke" tests/fuzz-smoke || rc=1
step "provision" .ci/provision-nix-rootfs || exit 1
step "nix parse" tests/nix-parse || rc=1
# nixfmt --check on every tracked .nix file: nixfmt 1.4.0 built from source
# (../shared/tools/build-nixfmt) and cached in /var/cache/snix-lower-store/nixfmt
# by scripts/nixfmt. The same version as the flake's `nix fmt`: flake.lock
# pins nixpkgs e2587cae (2026-07-23), whose pkgs.nixfmt is 1.4.0 (nixpkgs
# PR 539393, 1.3.1 -> 1.4.0, 2026-07-07; 1.5.0 was tagged after 2026-07-22).
step "nixfmt" scripts/nixfmt --check || rc=1
# tests/module-eval.nix (the flake's module-eval check) with real Nix and
# nixpkgs' real nix.nix, assertions.nix and filesystems.nix
# (tests/module-eval-local/default.nix).
step "module eval" tests/module-eval-local/run || rc=1
step "e2e" "$tdir/release/snix-lower-store-e2e" "$@" || rc=1
# Against a real snix-store when SNIX_STORE_BIN / SNIX_NIX_DAEMON_BIN are set;
# otherwise it says it did not run and exits NOT_RUN (snix is not built in
# CI): the summary then says "NOT RUN".
step_may_not_run "snix" tests/snix/run || rc=1
step "systemd" tests/systemd/run || rc=1
step "systemd facts" tests/systemd/device-facts || rc=1
step "nix conf" tests/nixos-local/nix-conf-check || rc=1
step "boot defects" tests/nixos-local/boot-defects-check || rc=1
step "nixos local" tests/nixos-local/run || rc=1
exit $rc
