//! A CPU interpreter of MIL programs with Core ML's op semantics, in fp32 or fp16-rounded.
//! It shares no code with the graph builder in `ane`: it is the independent check.
