//! The bytes anec writes for the seven fixtures, pinned by sha256, so that a change in any output
//! byte (graph, weights, RoPE tables, metadata) is deliberate.
//!
//! Every file of each output folder is hashed, with the fixture's absolute path (meta.json and
//! meta.yaml record where the weights were read) replaced by `<fixtures>` first. The table was
//! produced on x86_64 Linux; every f64→f16 rounding goes through `quant::f16_from_f64_rne`, so
//! the bytes should not depend on the platform (not yet checked on ARM). After a deliberate
//! change, regenerate it with
//!
//! ```text
//! ANEC_PRINT_HASHES=1 cargo test --test tests suite::hashes -- --nocapture
//! ```
//!
//! and paste the printed table (with its `#[rustfmt::skip]`) over [`EXPECTED`]. `--lut 6` is
//! pinned with `--calibration none` (the exact k-means, computed in f64 in a fixed order);
//! calibrated LUTs depend on f32 matrix products whose rounding may vary with the CPU's vector
//! width, so they are held deterministic per machine by a test in `cli` instead.

use std::collections::BTreeMap;

use anec::convert::{self, Chunks, Compile, ConvertPlan};
use anec::quant::LutSpec;
use sha2::{Digest, Sha256};

use super::util::{files, fixture, spec, ALL_MODELS};

/// (fixture/variant, file, sha256).
#[rustfmt::skip]
const EXPECTED: &[(&str, &str, &str)] = &[
    ("tiny-gemma3/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "207b5cd2d5737bc06557953059f3261c1249041a8e294ae9ecb438c29ac9b5f3"),
    ("tiny-gemma3/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "ed3c1cb2eab9e5b83536013a4b370c18be63f03c325df86f1daebfc29489d03a"),
    ("tiny-gemma3/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "d38778389c9f6778836aafd90906eff2adcb2360f93740b0e634b17d0a0996d6"),
    ("tiny-gemma3/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "ad490409cf894c75a2754cddea0703ec03b80b9e048e93af2f9d776c51e7e027"),
    ("tiny-gemma3/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e67e5493dfc35a135a8079c770f969536a7083f5e644a576b35118edbf90b075"),
    ("tiny-gemma3/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "84c92402b8198f7b08d1543349b5256e6c528ce317d1a2790dec46b51c5aa3a1"),
    ("tiny-gemma3/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "eb9e8c4dfaf556e1d72df037608bf24f43e6be8cf30a5380c16e0ed94628fe56"),
    ("tiny-gemma3/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "47ec5044a551d378429736764b23f8f107ce759fd3c908144e3fa29a4093c818"),
    ("tiny-gemma3/fp16", "embeddings.mlpackage/Manifest.json", "2b4d4c718920c5c81614b0a29b41af6f459d4ad4b90abe2548c45f3ee08ca72d"),
    ("tiny-gemma3/fp16", "generation_config.json", "311f0fadc6502a5a27fa9ca6d0903079670544ed1a59e64032bf295b7161a540"),
    ("tiny-gemma3/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "3f7b5f3c92588a851558d53d416d69d54b42473ca888686c321bd9f65eb99fab"),
    ("tiny-gemma3/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "47ec5044a551d378429736764b23f8f107ce759fd3c908144e3fa29a4093c818"),
    ("tiny-gemma3/fp16", "lm_head.mlpackage/Manifest.json", "27c822707c60d77e39f957e00470dd05fb2c0ccb09d4f0d7f34884e05dad2409"),
    ("tiny-gemma3/fp16", "meta.json", "e7512ab98ec34473dd65cc50e7b40af7c4433dd49c5ec29c530e41557252ba53"),
    ("tiny-gemma3/fp16", "meta.yaml", "fbb100b788753ffdbb0d839cf2139e8a0935c4953ebcbe4c8279b2f0303c7a3c"),
    ("tiny-gemma3/fp16", "tokenizer.json", "fc46c2af62c2b469a07d8299bcb9c34c67247c5697a21aadd3315beca54b440c"),
    ("tiny-gemma3/fp16", "tokenizer_config.json", "85a6452518ae1ce6a6e95e2397ba7200778ff4ffd2e36647342ff3ab7de3a077"),
    ("tiny-gemma3/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "d12fd06a23189ad269c9362e83172ef2c2f79d4d6012119071364ad503cfb70f"),
    ("tiny-gemma3/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e49bc38ea8a0bb192714f52ef0b3cbe086c7f5a0283a8c638d406e7e71da91c3"),
    ("tiny-gemma3/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "e340b3350c52d412f7091d4c02916798f1499c8d2a7751533aeba9893e4520ce"),
    ("tiny-gemma3/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "5d491aa4c469662cba07d37d11e7c1bb56931c6b7999fa66ab7e7ab1d32aa51e"),
    ("tiny-gemma3/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "a1b7f68ce3632ff177fe275bea730cbfcddaf55b6032d5859f95607247a88caf"),
    ("tiny-gemma3/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "32278c537de0fc1de815ffba3587ceb3fe28a4573ec68a5572aaa2cedc19af93"),
    ("tiny-gemma3/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "eb9e8c4dfaf556e1d72df037608bf24f43e6be8cf30a5380c16e0ed94628fe56"),
    ("tiny-gemma3/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "47ec5044a551d378429736764b23f8f107ce759fd3c908144e3fa29a4093c818"),
    ("tiny-gemma3/lut6", "embeddings.mlpackage/Manifest.json", "2b4d4c718920c5c81614b0a29b41af6f459d4ad4b90abe2548c45f3ee08ca72d"),
    ("tiny-gemma3/lut6", "generation_config.json", "311f0fadc6502a5a27fa9ca6d0903079670544ed1a59e64032bf295b7161a540"),
    ("tiny-gemma3/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "a96ea13d0ae10e8da03aace5fb1d382b33263174c8a9b19bdc7382e9b36b4533"),
    ("tiny-gemma3/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "a35f91bf335c1ac97d491d086ac01852b6acbb70214b995bc7f4e65a0b1da380"),
    ("tiny-gemma3/lut6", "lm_head_lut6.mlpackage/Manifest.json", "0192ea8d8cea7a7b25c0633796fb2d0b59161e00a113285399cc531957edeac8"),
    ("tiny-gemma3/lut6", "meta.json", "7ad4a64d85ea2f9650396c3030464af3355776662a7f658b75430c89cf0a7b0d"),
    ("tiny-gemma3/lut6", "meta.yaml", "281db231fd84b411cffcf7d55a380287490d8dd72a15ab4a5d64d16448269f72"),
    ("tiny-gemma3/lut6", "tokenizer.json", "fc46c2af62c2b469a07d8299bcb9c34c67247c5697a21aadd3315beca54b440c"),
    ("tiny-gemma3/lut6", "tokenizer_config.json", "85a6452518ae1ce6a6e95e2397ba7200778ff4ffd2e36647342ff3ab7de3a077"),
    ("tiny-llama-linear/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "55805dde95c432203593a5b6567bf5183dcf9640833fdad7e46683b54469a062"),
    ("tiny-llama-linear/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c7098726ab46ef4f8e8552518edabe9584d4ad8a663593c69670d705d33ea507"),
    ("tiny-llama-linear/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "560142d43b38b832de6b19682c8fa5d45c4149253bc36e20dd93acb12e905a3b"),
    ("tiny-llama-linear/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "743e0725cddba72c6461e4791a358802b2d8bb515268462fe9e7ff707068d056"),
    ("tiny-llama-linear/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "3f02f1db2b3932a1bdb4a510a9234d7ab20d922e7626bd0d5060c1165f8a864c"),
    ("tiny-llama-linear/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "08d00f185e512c24784b44a843563b729e0ac016324ab55b0a596547e6e80b1b"),
    ("tiny-llama-linear/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "3a49fbcb25b53add39950d10a3c25c27e991d6c538b45dba5d0e96f50583d2ed"),
    ("tiny-llama-linear/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "674e0e3056e2a41fafa302670104a56466814f8f6409cfa37f3b83de64496856"),
    ("tiny-llama-linear/fp16", "embeddings.mlpackage/Manifest.json", "fbfe3fad784b9bb204c4e2375293c876c4a7f701a9f8bc116ba8dd4d774a7ae0"),
    ("tiny-llama-linear/fp16", "generation_config.json", "6c9f67b10f4a55fb1ec22d944a9652976fe4217d76283762eb8c926c8f76129c"),
    ("tiny-llama-linear/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "f6f521fee36f1f5ea98ea80fb40e79f50ae466c2ceee195291203e1c02be19e4"),
    ("tiny-llama-linear/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "83b06073731ca8eeb366bedec6c49c90f8c99ef23d28e23c7c7928f1b25fa9db"),
    ("tiny-llama-linear/fp16", "lm_head.mlpackage/Manifest.json", "76b2facccb5df010f7788013ceba2426c11809b5430c9cade0304b134c0212fa"),
    ("tiny-llama-linear/fp16", "meta.json", "ca865240463a3dfa3dc1aafedb65ec20e0969e9277036c63c2a036348addc549"),
    ("tiny-llama-linear/fp16", "meta.yaml", "5803b79698a8f65557bb1f5ab7b3cb71833262602cf18e813305319270043fbc"),
    ("tiny-llama-linear/fp16", "tokenizer.json", "da00ebd7aa3696f0263b2cff93256dfd80c34987eddc5efabf3cf88c7cf23064"),
    ("tiny-llama-linear/fp16", "tokenizer_config.json", "5eef9868f99ba8b557354470a4cc7c752bc5017f69671cc930e05a13071f58e1"),
    ("tiny-llama-linear/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "9010faeb093989cb17399deab8fe401272e5f1a4e08a16e3eced1a900869ec26"),
    ("tiny-llama-linear/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "7621c029944098fc0f652968a677df856b0435a85cfa14e2fed2d394f90b481e"),
    ("tiny-llama-linear/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "1e6ae11be836c3bd7ea0c5b3d606fc1bc4f159ac770a5cd2d3b55c8ba232f887"),
    ("tiny-llama-linear/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "cc360df0c7e88cd6a35dbd178479a3b5bbd51531a668b0174f31205f94d5d2e8"),
    ("tiny-llama-linear/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "9bb9e9585df6e2da0c949db6128b1fccdbce7bf514b34931a161b7207f72112f"),
    ("tiny-llama-linear/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "8a3c746abb6b146f57ec7f0ab945428914a5da050d20f3f82c0cb980b8147159"),
    ("tiny-llama-linear/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "3a49fbcb25b53add39950d10a3c25c27e991d6c538b45dba5d0e96f50583d2ed"),
    ("tiny-llama-linear/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "674e0e3056e2a41fafa302670104a56466814f8f6409cfa37f3b83de64496856"),
    ("tiny-llama-linear/lut6", "embeddings.mlpackage/Manifest.json", "fbfe3fad784b9bb204c4e2375293c876c4a7f701a9f8bc116ba8dd4d774a7ae0"),
    ("tiny-llama-linear/lut6", "generation_config.json", "6c9f67b10f4a55fb1ec22d944a9652976fe4217d76283762eb8c926c8f76129c"),
    ("tiny-llama-linear/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "e4c708f40f4602834f05e5c665abcf1781972330068238528fbf716973925d14"),
    ("tiny-llama-linear/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "a7b202528e1784177e8dc9ec485bbf8c30986b0ad8c0572b204c7446fa3b3600"),
    ("tiny-llama-linear/lut6", "lm_head_lut6.mlpackage/Manifest.json", "7b511aa578254df2431f778f97539de4855cc1c8d6dc1d2ba0f96af807a7bdf7"),
    ("tiny-llama-linear/lut6", "meta.json", "5d9cbe71923fafc0939f51f4b4e8a0fd78c8b75517f2f9705be5529c319fa6f7"),
    ("tiny-llama-linear/lut6", "meta.yaml", "a9a440b84dbd01482deb205ca0d8cc9f1dd9c94e5bd4c3e822b282f01046efc2"),
    ("tiny-llama-linear/lut6", "tokenizer.json", "da00ebd7aa3696f0263b2cff93256dfd80c34987eddc5efabf3cf88c7cf23064"),
    ("tiny-llama-linear/lut6", "tokenizer_config.json", "5eef9868f99ba8b557354470a4cc7c752bc5017f69671cc930e05a13071f58e1"),
    ("tiny-llama/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "4af2efb125c56dddff69466ac84ca333747402689e4cc9da5079a6e53cfe4fb4"),
    ("tiny-llama/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "d41aa6d38b6d2c213cf9bd6607c9179c9d567878477ceae8ed87ee07d62355a1"),
    ("tiny-llama/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "40377d42b5afafaaf544f5e53b0e2782054f34dd55b2773d78baa84e337696cc"),
    ("tiny-llama/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "4cc7c4ae8ea8df74fa4512b2ba6cb29f47ffa028c90d0beedcc445f158aba76d"),
    ("tiny-llama/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e43e5becccefb2ce6195117912f64171859a80b877a5100dfbe257911ec2f8b2"),
    ("tiny-llama/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "895e9879c8cc1ccf29245980a4a11abc5ddf8f1a023c0e52868ad486ae3352b2"),
    ("tiny-llama/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "2e85bbda5ab86da68eb2467184b7bec904e16a9e2ca2f698d1f2871078024bc7"),
    ("tiny-llama/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c0b7197079ab7eeb4b92272783cd4c0ef6ee30827f2116d34bb671290515aa53"),
    ("tiny-llama/fp16", "embeddings.mlpackage/Manifest.json", "cd71823f05cee41a482258ad909e68d253f6c061dbeb0be97d3db8b21ae3311e"),
    ("tiny-llama/fp16", "generation_config.json", "6c9f67b10f4a55fb1ec22d944a9652976fe4217d76283762eb8c926c8f76129c"),
    ("tiny-llama/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "354da6dcd733867f00710e90b3c51a717e08633c060890fe79b9022799cd5bc2"),
    ("tiny-llama/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "6add006f0edba82e785844c3a4745bbdec495a4df2a9e4297245a2358d4093aa"),
    ("tiny-llama/fp16", "lm_head.mlpackage/Manifest.json", "71bfc786023848538a87b29c901cda9081326f2115db42e835d31a1227f0b92a"),
    ("tiny-llama/fp16", "meta.json", "be4e6d51069bf66882737b03f8c584c6fa14119828f9605f7d4517c8e6905be6"),
    ("tiny-llama/fp16", "meta.yaml", "69a60c9f752a85927a1dc2caf354a8a084343710c4081347a11997e16e8ae3c3"),
    ("tiny-llama/fp16", "tokenizer.json", "da00ebd7aa3696f0263b2cff93256dfd80c34987eddc5efabf3cf88c7cf23064"),
    ("tiny-llama/fp16", "tokenizer_config.json", "5eef9868f99ba8b557354470a4cc7c752bc5017f69671cc930e05a13071f58e1"),
    ("tiny-llama/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "7e139fce0b81f59027f43301aa5671e63d82e5f5d99d7e95da063e920517355a"),
    ("tiny-llama/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "bf44784989c5bdeb4a75f5f3b2954b2dc4b1880782f1f35aeaefc4bd274025ad"),
    ("tiny-llama/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "403f35ed3794dbe390a0656bbefbf1cd7250bb8a7896dc43f8ecc85ef2c260c7"),
    ("tiny-llama/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "54e5e3985539a5b0b96978bc7fcbea353ba951249c96918205acf5dc5b9261bc"),
    ("tiny-llama/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "cb46af6758eb92f26c4a25fb0c56b90ad0013242ae3ddd9df1c4b6edaea93bef"),
    ("tiny-llama/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "a874bfea675e056641187917b9d597b84f17a7ca2d48b96b5273f85204f6b4c7"),
    ("tiny-llama/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "2e85bbda5ab86da68eb2467184b7bec904e16a9e2ca2f698d1f2871078024bc7"),
    ("tiny-llama/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c0b7197079ab7eeb4b92272783cd4c0ef6ee30827f2116d34bb671290515aa53"),
    ("tiny-llama/lut6", "embeddings.mlpackage/Manifest.json", "cd71823f05cee41a482258ad909e68d253f6c061dbeb0be97d3db8b21ae3311e"),
    ("tiny-llama/lut6", "generation_config.json", "6c9f67b10f4a55fb1ec22d944a9652976fe4217d76283762eb8c926c8f76129c"),
    ("tiny-llama/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "39bc6b983856d52988cd084a34ae0328b2ad4053b0fb6fca4731dd409d84b3e8"),
    ("tiny-llama/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "0081ba9f569558f1cef98efa77ca29d73620588d4c7428171ea8c6da0cceba3f"),
    ("tiny-llama/lut6", "lm_head_lut6.mlpackage/Manifest.json", "8ee074064baa6d2c6cd3f6bfa1849030f3c37f987105341b9312e99e2d0ceaaa"),
    ("tiny-llama/lut6", "meta.json", "5980d89317b4fec8ccad39a5c968c4c35f6e7436613f6244aead44aa07463f4d"),
    ("tiny-llama/lut6", "meta.yaml", "a49a7994d333338cb07d7ddf3b2d93ad18f3fc9b3b17576ab90f16f879b1e231"),
    ("tiny-llama/lut6", "tokenizer.json", "da00ebd7aa3696f0263b2cff93256dfd80c34987eddc5efabf3cf88c7cf23064"),
    ("tiny-llama/lut6", "tokenizer_config.json", "5eef9868f99ba8b557354470a4cc7c752bc5017f69671cc930e05a13071f58e1"),
    ("tiny-llama/mono-lut6", "generation_config.json", "6c9f67b10f4a55fb1ec22d944a9652976fe4217d76283762eb8c926c8f76129c"),
    ("tiny-llama/mono-lut6", "meta.json", "391a6c6f2198886545f1de84ce7bbf1099f8e2be7fa7e0db851e2258529af384"),
    ("tiny-llama/mono-lut6", "meta.yaml", "4ed979f75f27b5f35fdc3666c0879509008d6de00870d5b702c14c018c8b60ed"),
    ("tiny-llama/mono-lut6", "monolithic_full_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "4eef2070ee03667c6238b5f8fe73f00a96c8e21670fc3a726dd2be26d39a8e9a"),
    ("tiny-llama/mono-lut6", "monolithic_full_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "5164894b073433c884b9291b9ead91d71516cc4afda08d65edd4b814c3523338"),
    ("tiny-llama/mono-lut6", "monolithic_full_lut6.mlpackage/Manifest.json", "fc68953df2806bbccc28386a56d5f3a4428b93fdddd40b4aa51ab625b7fe53a8"),
    ("tiny-llama/mono-lut6", "tokenizer.json", "da00ebd7aa3696f0263b2cff93256dfd80c34987eddc5efabf3cf88c7cf23064"),
    ("tiny-llama/mono-lut6", "tokenizer_config.json", "5eef9868f99ba8b557354470a4cc7c752bc5017f69671cc930e05a13071f58e1"),
    ("tiny-mistral/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "ec1d83f30e27968f3276af397a239ef678cb6abfa725f1c9febd437b0a88a7ef"),
    ("tiny-mistral/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "00adbb70fbd7d95baeda8ce2e00283ca07724aeab8fbbd29f6c1d01aa77631db"),
    ("tiny-mistral/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "a18f148185d0ac595e6242649ff49de506fd8048f8934b1f5ac94ec58fb7551b"),
    ("tiny-mistral/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "23547a80d411574ff3c4459192dcb6cf62672399f4ce7e6e26f6a24fb2ea33bb"),
    ("tiny-mistral/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "4b9dc633cc657044be21e8d3428dc0b4342642d1f9ffc457110e1e22ed08654f"),
    ("tiny-mistral/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "40bf93a2d1b46659787f033f97aefbae51f84917bbdd9999e819707fb3e80afb"),
    ("tiny-mistral/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "26eb04d815d4b05780eafe9857743b5d48092be7aac4dbb0b5e38ba4eb5e30fc"),
    ("tiny-mistral/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c9cc02a683d5e8ae19c7eedd89461a8be8db66028707949e9dea9a54bd026b31"),
    ("tiny-mistral/fp16", "embeddings.mlpackage/Manifest.json", "a54f45d6a0a6053fbc3d50c59c820f297368e867f35e65a390b8190f4c3d39c9"),
    ("tiny-mistral/fp16", "generation_config.json", "92a5c418526e535ff093b96e8d3288d73c828b7968340737b0efe3f8ce94d8a8"),
    ("tiny-mistral/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "e0db2a8525efa57ad48eb4475794abd30a1ecad6cadd5fd0eca0002f4c78ed98"),
    ("tiny-mistral/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "8398f1e1e5b341c12281f6fca9b7dcf5977e5d1114ee662ecdc172765f7bb19f"),
    ("tiny-mistral/fp16", "lm_head.mlpackage/Manifest.json", "c5cb8e524ec621c6339bb30bd1f8eb86a3b1fcd1b3909700a1802df2eab2cbf1"),
    ("tiny-mistral/fp16", "meta.json", "3b14ba9829ab8e1589a38d7cfae17950dcd0b3f437f7f1fb90ac056436584444"),
    ("tiny-mistral/fp16", "meta.yaml", "8839fa37a9d965bde912dc5bf064bbd6c1ab0a0f16d5329ecc01b6133e46a54e"),
    ("tiny-mistral/fp16", "tokenizer.json", "ee3a7fe4a559827f1704dc1ad32253355f37094da624eac19150f3eec8b48d00"),
    ("tiny-mistral/fp16", "tokenizer_config.json", "a32c88a67297bb9c99d8240afc75b2fe99869ae991cbcc1b0d1aacb91d32bb6b"),
    ("tiny-mistral/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "57b88c66948ccae7fcfa759f8a56dbf4c5aa22858d69d55a08c020f0f0970728"),
    ("tiny-mistral/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "804f9d1264dd97bb76957870d9fbf1aaf896ca5374336a906397e90c060a56c0"),
    ("tiny-mistral/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "149ee3f068e7a74d392b382260a912251746421427194ab6f3847e36656b1f0a"),
    ("tiny-mistral/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "f956cc47ef11d6a41efe6fad124bb9ffab340d082919a36d1244fcd9679fee94"),
    ("tiny-mistral/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "0ac36e90b4aecf48f1a6b2ea6ecaaa63702629af7860b5a1e42659361396f576"),
    ("tiny-mistral/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "ff7b7613e7b9f55c1a93e07ce43cb7241ac27413da68434288a4e3b136e03d3d"),
    ("tiny-mistral/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "26eb04d815d4b05780eafe9857743b5d48092be7aac4dbb0b5e38ba4eb5e30fc"),
    ("tiny-mistral/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c9cc02a683d5e8ae19c7eedd89461a8be8db66028707949e9dea9a54bd026b31"),
    ("tiny-mistral/lut6", "embeddings.mlpackage/Manifest.json", "a54f45d6a0a6053fbc3d50c59c820f297368e867f35e65a390b8190f4c3d39c9"),
    ("tiny-mistral/lut6", "generation_config.json", "92a5c418526e535ff093b96e8d3288d73c828b7968340737b0efe3f8ce94d8a8"),
    ("tiny-mistral/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "40b15c4f6239fb232c02d425d98cc88edab0e44e797fdbe63e03678e60e1f428"),
    ("tiny-mistral/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "348d6ae17cf4f4585199a7277b2327f8fc2a0598cf8b8cdb1222a68d675fd169"),
    ("tiny-mistral/lut6", "lm_head_lut6.mlpackage/Manifest.json", "8fb714fac6ac74c706e5d328b484ecac42224c83c16b48740fc4ffae3b94e4d9"),
    ("tiny-mistral/lut6", "meta.json", "b6752765074544148436c0a688d25ee3b5e0feaec8b6628ab5f400bcafc0c16f"),
    ("tiny-mistral/lut6", "meta.yaml", "d5862d44af906fa38c9bef7c1ab84201d319ba1ad63775d48cfe0e8d002b027b"),
    ("tiny-mistral/lut6", "tokenizer.json", "ee3a7fe4a559827f1704dc1ad32253355f37094da624eac19150f3eec8b48d00"),
    ("tiny-mistral/lut6", "tokenizer_config.json", "a32c88a67297bb9c99d8240afc75b2fe99869ae991cbcc1b0d1aacb91d32bb6b"),
    ("tiny-qwen2-swa/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "b001f21f411afda27d7ed4fe59e6865cab617bc5da35123a53ce3d767c49933b"),
    ("tiny-qwen2-swa/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c37d6ec465c9329258e2a8568f995ad226b15495e5e2d38d5270451cad8ea28d"),
    ("tiny-qwen2-swa/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "e82f14c9d927c1e654f7a8f84ce48df3a22867fe67591faac494646f0b836965"),
    ("tiny-qwen2-swa/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "6f7bf1f74af0adc499ec160da7d0486cf8a7fde04bf73c5690f9a537937e2d50"),
    ("tiny-qwen2-swa/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "ff3eefa17c4493d2d30c3f9336a1aac72d76b711bb564bc96ebe82c2bdfb4455"),
    ("tiny-qwen2-swa/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "9c8740197d305415bb4d264d12e6e6cb819dd5df0d3357bc4926731cc9d8475b"),
    ("tiny-qwen2-swa/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "d111ae1487c4a62bb59bf5c5acaaf368309e06f9c0f1bf740d491f5fa9fe5a0d"),
    ("tiny-qwen2-swa/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "26c29623bc21d49aa2f361c95a8a6d286890fec5317fc95f259f2f5bfc47c9a0"),
    ("tiny-qwen2-swa/fp16", "embeddings.mlpackage/Manifest.json", "09b73ce2575adb60f8b59a029480387f04440f969c76c7ce9e0ef517c696c838"),
    ("tiny-qwen2-swa/fp16", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen2-swa/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "2b430ea920051445965553b05573c33201304da6caaaf16b29ecbede3297774e"),
    ("tiny-qwen2-swa/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "26c29623bc21d49aa2f361c95a8a6d286890fec5317fc95f259f2f5bfc47c9a0"),
    ("tiny-qwen2-swa/fp16", "lm_head.mlpackage/Manifest.json", "d095ee93cc0e5b1425cc6b997d52b5bcc6e9b386fd273dcb0405ee0f857c935d"),
    ("tiny-qwen2-swa/fp16", "meta.json", "b9b83bb7c4ecad906f36fe3c7273b2ad7ce56cb0514fa6dadf07fee83f64430f"),
    ("tiny-qwen2-swa/fp16", "meta.yaml", "d1c8b490fa6b86bdbaff5614124237e673fcfdd41c59bc038f618df3daab07ff"),
    ("tiny-qwen2-swa/fp16", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen2-swa/fp16", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
    ("tiny-qwen2-swa/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "c8420410b1e36faecaa5a49a14e9e6cd4b50e207adafaee9ca9906872b9e3ff0"),
    ("tiny-qwen2-swa/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "130b0dddbc6ccf7c16b78af61722cd02a5f481297d0740f781a0dc45b0d4844c"),
    ("tiny-qwen2-swa/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "2ab2662312e27c3eaaf5e3e68f2772c84ad9d50f111357b8d0b1a8fdff2ba715"),
    ("tiny-qwen2-swa/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "2978cf8a1887339543398d337d82ea87630787fd12fb980ef0d2afae9407ee01"),
    ("tiny-qwen2-swa/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "3bd1287a7bc8e66c5a2bd504132119c6dd5e682bfedb9a585d70e64fd8cb6c15"),
    ("tiny-qwen2-swa/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "73eb9e44ef4103ee3a3447722eb508c7403285dbf708bba6a82c9a3a053ba808"),
    ("tiny-qwen2-swa/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "d111ae1487c4a62bb59bf5c5acaaf368309e06f9c0f1bf740d491f5fa9fe5a0d"),
    ("tiny-qwen2-swa/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "26c29623bc21d49aa2f361c95a8a6d286890fec5317fc95f259f2f5bfc47c9a0"),
    ("tiny-qwen2-swa/lut6", "embeddings.mlpackage/Manifest.json", "09b73ce2575adb60f8b59a029480387f04440f969c76c7ce9e0ef517c696c838"),
    ("tiny-qwen2-swa/lut6", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen2-swa/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "aeae52aa8b2c16fcff7ded0cf31b77c4057c6485649bf34e4c5b06e444f4d52e"),
    ("tiny-qwen2-swa/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "fb99322a8afeb31786c7bffd3f5812e1afe12885a27409618dde17ab639c0977"),
    ("tiny-qwen2-swa/lut6", "lm_head_lut6.mlpackage/Manifest.json", "770c95573f6ac49ec62b971f5c7dba90f9f2aab928489595e9f477482d531639"),
    ("tiny-qwen2-swa/lut6", "meta.json", "f0695d27a29240da7ff5ad03697806aab5bd1247554dfedda8032357325884b0"),
    ("tiny-qwen2-swa/lut6", "meta.yaml", "240b694782d966d149b8b9ee7e0e6f9f01f134d716b38d6ec2ab90a0de74a623"),
    ("tiny-qwen2-swa/lut6", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen2-swa/lut6", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
    ("tiny-qwen2/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "90c9d09fe099ab409653c62fd5e8b5f8a2602b65412d226f4536bf11631551a3"),
    ("tiny-qwen2/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "bd93da58b0a79f3a54475b1f78acd0ef14908de8102f45621a00973ecb6c9757"),
    ("tiny-qwen2/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "afb5be179a9db40f042c86f4f7981765061df59f1bb6959fbdfe0c9117b0648f"),
    ("tiny-qwen2/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "b6e2f06b3f7238ee5b393351f88cd4a648d8ce82b0d1b4e6e538560b53d4e59f"),
    ("tiny-qwen2/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e20b31dcbc6379ad34cc10b4c203e81b949027f055b5fc6a0a884edffdaebc04"),
    ("tiny-qwen2/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "58f52850562b3b8035ed53eae9254fbccec45dbc0fc3885c7692dd0befe22019"),
    ("tiny-qwen2/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "8438a3c483360c633140d43235122c23010efa46cb82fab10f7c8ac9f06b9301"),
    ("tiny-qwen2/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e568a21149f3bea8bb0bcf692806231726ff63a9f23030fa49a4d82bc1500de1"),
    ("tiny-qwen2/fp16", "embeddings.mlpackage/Manifest.json", "617d767bfa9231919772c9a09593de4387dc9427f4a4c6910d4054810d9478a9"),
    ("tiny-qwen2/fp16", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen2/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "64782cf7098d4a8de6b1b4629c479a7aa092e5b9d7dacb07a7f14b324c44e7c8"),
    ("tiny-qwen2/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e568a21149f3bea8bb0bcf692806231726ff63a9f23030fa49a4d82bc1500de1"),
    ("tiny-qwen2/fp16", "lm_head.mlpackage/Manifest.json", "39b5d02d0f4af335009693d8a277964e4b05a745205c80effa33f87ec5a9f2a1"),
    ("tiny-qwen2/fp16", "meta.json", "491fadfcd879eac4e77c59113ec0f548d14736f3d4d14bfeb4c5a4b922be41fc"),
    ("tiny-qwen2/fp16", "meta.yaml", "3170f8947f37e5ae194e49663514cc3a73fafefd99c9abd34457107dd2f7a01e"),
    ("tiny-qwen2/fp16", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen2/fp16", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
    ("tiny-qwen2/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "ddada484c03bc24865e0862fb7ef9e71665db52c8cb6b9fe4b146f2c8cca6424"),
    ("tiny-qwen2/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "47059d5f0f18e599a39fce367aca50235d4b6db77f5b13e0c51f5abede7b3f99"),
    ("tiny-qwen2/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "1bb5d7d3c7bc9159f6fa603eec1a83c9ad5bcd66d2c7b9547c71a93985cec00d"),
    ("tiny-qwen2/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "9d772328ec9863289799855a62bb77f8fbb64dbb388c9858a6475fb949344a96"),
    ("tiny-qwen2/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "2a7b2389d8b07d481b76593adfa8af112b57370c89a2edaf0e422198809c617b"),
    ("tiny-qwen2/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "d5133e7b5429a43ab1273ffb0b398c761874cde8fee330921d97d9221eabc0bf"),
    ("tiny-qwen2/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "8438a3c483360c633140d43235122c23010efa46cb82fab10f7c8ac9f06b9301"),
    ("tiny-qwen2/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e568a21149f3bea8bb0bcf692806231726ff63a9f23030fa49a4d82bc1500de1"),
    ("tiny-qwen2/lut6", "embeddings.mlpackage/Manifest.json", "617d767bfa9231919772c9a09593de4387dc9427f4a4c6910d4054810d9478a9"),
    ("tiny-qwen2/lut6", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen2/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "c23993b8ec074634aff60f499d4a49ab4f800db8992791f0b9339c8413f30fff"),
    ("tiny-qwen2/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "6b62ae71acd52ded732e8783d705c6e138ea31d19358c1a95bafbd7e42327218"),
    ("tiny-qwen2/lut6", "lm_head_lut6.mlpackage/Manifest.json", "7d9ea4fbd4b550d545f1846585bc860502211d9bb47c57d5eb8d7af6ab0fff43"),
    ("tiny-qwen2/lut6", "meta.json", "9815ef18220180b2b1b8a2d3be54ede1e3c21c2e5bdd21bd40d591deae4d20ff"),
    ("tiny-qwen2/lut6", "meta.yaml", "656a95528d8138c24bdcce6ffae5ee8c1b2520972ecc7a9e88f49aaa8f98923d"),
    ("tiny-qwen2/lut6", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen2/lut6", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
    ("tiny-qwen3/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "c7e8636022bd3a9b17046536e8cb48bde4daa8bc0ce4d81b4e4ff8e34c06125d"),
    ("tiny-qwen3/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "d9e777d7fe4f5a4c48b1165f7673a7600848dc2df8abfa54208e115c70cb6b7a"),
    ("tiny-qwen3/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "28703f36f97671983b9dc97c54cdb8ebca22dcbf04122e607ddf89dfee79904a"),
    ("tiny-qwen3/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "dcdfdad431ef029f9891bd73a322ad6c637cdd03bd8bf04cb3fed7297897bf59"),
    ("tiny-qwen3/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c3c2b21ac5409587a64d38d60fc661fcd8a8e6e07a6f8cde5e135fa056bf02c3"),
    ("tiny-qwen3/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "8dddc8a4f8764dbef9bd98eec4a7d982f4e90eeaeadba7defc7242eea5c6fb45"),
    ("tiny-qwen3/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "035238138a94e8b175e59cfb7730bd9c1830e0db32abb902f96f0c2f4acf42b7"),
    ("tiny-qwen3/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "fb06bfb1c874bd7c65b88c0992519735d32e137d5c75a6a13b975a5d112dfbdc"),
    ("tiny-qwen3/fp16", "embeddings.mlpackage/Manifest.json", "eca2d39cc1eaad663446eae9318d6fd397ecd9f1f31992653e1ba177807029d6"),
    ("tiny-qwen3/fp16", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen3/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "aa1fd816d1f687afe1b5d3651a0b23fee58df106a5610d6d35b6422832227e0e"),
    ("tiny-qwen3/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "fb06bfb1c874bd7c65b88c0992519735d32e137d5c75a6a13b975a5d112dfbdc"),
    ("tiny-qwen3/fp16", "lm_head.mlpackage/Manifest.json", "8a1c11bc053ec4e0bcf61c945c5b10d5c93c9fa5325bcb5459557b28396a91a8"),
    ("tiny-qwen3/fp16", "meta.json", "1e6337980de736c0d3baa9e5a5b2eb9f8476a4e12a86d37f086f52bf94408f78"),
    ("tiny-qwen3/fp16", "meta.yaml", "bab74f83f56a7676204c972054981c935281394e399bb63b335b6bb62e4604a8"),
    ("tiny-qwen3/fp16", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen3/fp16", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
    ("tiny-qwen3/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "11fa00083f0601210fe8caebeba5de71919629def605a5b8780465ebe21ddedb"),
    ("tiny-qwen3/lut6", "combined_lut6_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "b7d09edf39e3167f17257ccc2bb19c5a119acc826dc40e4d6ec836944bae7a5a"),
    ("tiny-qwen3/lut6", "combined_lut6_chunk_01of02.mlpackage/Manifest.json", "a3fc18f9935221cc8fa59709d720c7c1e3afc76ad04886395e93cadb9503f141"),
    ("tiny-qwen3/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "ff0c4a182d49663774aa6a2b81d6bd79d51e3a4d229fa02ff57880852a36961a"),
    ("tiny-qwen3/lut6", "combined_lut6_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "5a304316be74173eec1c28a293d61b9e173bcdb40dd6c2dcb4a0aa23fe5f63d7"),
    ("tiny-qwen3/lut6", "combined_lut6_chunk_02of02.mlpackage/Manifest.json", "059be257a046e22b33b0286f6cdd5ee67211f100dcb72d72c5d54e0e747bfdcf"),
    ("tiny-qwen3/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "035238138a94e8b175e59cfb7730bd9c1830e0db32abb902f96f0c2f4acf42b7"),
    ("tiny-qwen3/lut6", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "fb06bfb1c874bd7c65b88c0992519735d32e137d5c75a6a13b975a5d112dfbdc"),
    ("tiny-qwen3/lut6", "embeddings.mlpackage/Manifest.json", "eca2d39cc1eaad663446eae9318d6fd397ecd9f1f31992653e1ba177807029d6"),
    ("tiny-qwen3/lut6", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen3/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/model.mlmodel", "56de24a2523de7a28289aea3a760b595e84f1b6b768f9e49c6feb36d2542f6ca"),
    ("tiny-qwen3/lut6", "lm_head_lut6.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "276774bf57fdab8a9577a74e4eed81fab886f1f8f11e7eb1ff6565c9b7206cb5"),
    ("tiny-qwen3/lut6", "lm_head_lut6.mlpackage/Manifest.json", "2067e9fcc7bbead1a2e76ad62ba44519a4e778c68921fee70b32c6385caf15d3"),
    ("tiny-qwen3/lut6", "meta.json", "a57fe46da929824d661eddf713f0aa647fef228b8e9118c8445660299b1a90e3"),
    ("tiny-qwen3/lut6", "meta.yaml", "cc9185520bb5b69e989b0401180a48d9bcf5f06e91f270ab6b755d7f2164a5f7"),
    ("tiny-qwen3/lut6", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen3/lut6", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
];

/// One fixture converted at context 64, batch 16, two chunks, fp16 (`--lut none
/// --lut-lmhead none`) or with `lut` on the chunks and LM head and plain k-means
/// (`--calibration none`): every file's sha256 by relative path.
fn converted_hashes(model: &str, lut: Option<LutSpec>) -> BTreeMap<String, String> {
    converted_hashes_with(model, lut, |_| {})
}

/// [`converted_hashes`] with `edit` applied to the plan last.
fn converted_hashes_with(
    model: &str,
    lut: Option<LutSpec>,
    edit: impl FnOnce(&mut ConvertPlan),
) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let mut plan = ConvertPlan::new(spec(model), &out);
    plan.lut_ffn = lut;
    plan.lut_lmhead = lut;
    plan.calibration = None;
    plan.context_length = 64;
    plan.batch_size = 16;
    plan.chunks = Chunks::Count(2);
    plan.quiet = true;
    plan.compile = Compile::Never;
    edit(&mut plan);
    convert::run(&plan).expect("conversion");
    let fixtures = fixture("");
    let root = fixtures.to_string_lossy();
    let root = root.trim_end_matches('/');
    files(&out)
        .into_iter()
        .map(|(path, bytes)| {
            let bytes = replace(&bytes, root.as_bytes(), b"<fixtures>");
            (path, hex(&Sha256::digest(&bytes)))
        })
        .collect()
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn converted_fixture_bytes_are_pinned() {
    let mut got = BTreeMap::new();
    let lut6 = LutSpec::new(6, Some(8)).expect("spec");
    for model in ALL_MODELS {
        for (variant, lut) in [("fp16", None), ("lut6", Some(lut6))] {
            for (file, hash) in converted_hashes(model, lut) {
                got.insert((format!("{model}/{variant}"), file), hash);
            }
        }
    }
    // The monolithic package of one fixture (--monolithic, LUT6 layers and LM head).
    for (file, hash) in converted_hashes_with("tiny-llama", Some(lut6), |p| p.monolithic = true) {
        got.insert(("tiny-llama/mono-lut6".to_string(), file), hash);
    }
    if std::env::var_os("ANEC_PRINT_HASHES").is_some() {
        println!("#[rustfmt::skip]\nconst EXPECTED: &[(&str, &str, &str)] = &[");
        for ((variant, file), hash) in &got {
            println!("    ({variant:?}, {file:?}, {hash:?}),");
        }
        println!("];");
        return;
    }
    let want: BTreeMap<(String, String), String> = EXPECTED
        .iter()
        .map(|&(v, f, h)| ((v.to_string(), f.to_string()), h.to_string()))
        .collect();
    let mut diff = Vec::new();
    for key in want.keys().chain(got.keys()) {
        if want.get(key) != got.get(key) && !diff.contains(&key) {
            diff.push(key);
        }
    }
    assert!(
        diff.is_empty(),
        "converted bytes changed (expected vs written, by file):\n{}\nregenerate with \
         ANEC_PRINT_HASHES=1 cargo test --test tests suite::hashes -- --nocapture",
        diff.iter()
            .map(|k| format!(
                "  {}/{}: {} vs {}",
                k.0,
                k.1,
                want.get(*k).map_or("(none)", String::as_str),
                got.get(*k).map_or("(none)", String::as_str)
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
