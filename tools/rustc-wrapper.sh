#!/usr/bin/env bash
# bash, not sh: dash drops environment variables whose names are not identifiers, such as
# CARGO_BIN_EXE_mcp-calculator, which integration tests read with env!().
# qdrant-edge 0.9 uses `std::debug_assert_matches`, stable only from Rust 1.96. On 1.95 this enables
# that one library feature for that one crate; every other crate is compiled unchanged.
# Remove this wrapper (and .cargo/config.toml's rustc-wrapper) once the toolchain is 1.96 or newer.
rustc="$1"; shift
case " $* " in
  *" --crate-name qdrant_edge "*) RUSTC_BOOTSTRAP=qdrant_edge exec "$rustc" "$@" -Zcrate-attr='feature(assert_matches)' ;;
  *) exec "$rustc" "$@" ;;
esac
