# bench/release.sh: sourced by the bench scripts after they set ROOT and TARGET: goes to the
# checkout, builds mutual and loadgen in release mode unless SKIP_BUILD=1, and sets LOADGEN.
# Exits 2 when the build fails.

cd "$ROOT" || exit 2
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release -q -p loadgen -p mutual || exit 2
fi
LOADGEN=$TARGET/release/loadgen
