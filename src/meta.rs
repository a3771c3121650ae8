//! meta.yaml / meta.json: one serde struct, written both ways.
