"""Coverage-guided fuzzing (atheris, libFuzzer) of the two parsers that read untrusted bytes:
image admission and decoding, and upload-event parsing. `targets` holds the properties, runnable
without atheris; `fuzz_decode` and `fuzz_events` are the libFuzzer entry points; `make_corpus`
writes the seed corpus from tests/hardening/corpus.py. Commands: tests/hardening/README.md."""
