//! The bytes anec writes for the four fixtures, pinned by sha256, so that a change in any output
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
//! and paste the printed table (with its `#[rustfmt::skip]`) over [`EXPECTED`]. `--lut 6` is not
//! pinned: LUT bytes change with the calibration work in progress, and no `--calibration none`
//! exists yet to hold them still.

use std::collections::BTreeMap;

use anec::convert::{self, Chunks, Compile, ConvertPlan};
use sha2::{Digest, Sha256};

use super::util::{files, fixture, spec, MODELS};

/// (fixture/variant, file, sha256).
#[rustfmt::skip]
const EXPECTED: &[(&str, &str, &str)] = &[
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
];

/// One fixture converted at context 64, batch 16, two chunks, fp16 (`--lut none
/// --lut-lmhead none`): every file's sha256 by relative path.
fn converted_hashes(model: &str) -> BTreeMap<String, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("out");
    let mut plan = ConvertPlan::new(spec(model), &out);
    plan.context_length = 64;
    plan.batch_size = 16;
    plan.chunks = Chunks::Count(2);
    plan.quiet = true;
    plan.compile = Compile::Never;
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
    for model in MODELS {
        for (file, hash) in converted_hashes(model) {
            got.insert((format!("{model}/fp16"), file), hash);
        }
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
