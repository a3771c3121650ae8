//! Turning `--model` into files: a local folder, or a hub id resolved through the HF cache.
