//! Cross-binary integration tests live in `tests/tests/`; the harness is the `testbed` crate.
