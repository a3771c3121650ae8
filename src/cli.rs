//! The command line: clap structs, resolved into validated settings before any work runs.
