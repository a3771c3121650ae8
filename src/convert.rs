//! `anec convert`: the pipeline from a model source to the output folder, with progress.
