//! Safetensors checkpoints (single or sharded) read through mmap one tensor at a time, converted
//! to fp16 with an overflow check, and the ledger of the tensor names used.
