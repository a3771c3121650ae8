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
    ("tiny-llama/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "ef4b904856a73e1055a0f534703af88a409e96c95b1e95ec56656d3d3fb5d8ef"),
    ("tiny-llama/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "15eedb7d1ca8874c3b6ff2405a9a8240d58bc083cdc63e1dbc04951db12267b7"),
    ("tiny-llama/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "20e3181a30eed41eb6448cf7019b5bc902298bdae31c1dc1745d31a0bd9da2a2"),
    ("tiny-llama/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "6723ee147928e52659de51bbccf919a3057d562a0210b0c0a7938837c0d65f2d"),
    ("tiny-llama/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "77d9def0f47c5ecd3e9ccc9df241af7b3f3c0753076afbdeb58f09618714871e"),
    ("tiny-llama/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "5f0c09d2e5c6395531845be0c2dbbbc909095253f5d4c3a2de40acea67e44342"),
    ("tiny-llama/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "ab4df87160ceb366b0830c0ae200e204b8715acefd3bc1b430307846d3384ea0"),
    ("tiny-llama/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c0b7197079ab7eeb4b92272783cd4c0ef6ee30827f2116d34bb671290515aa53"),
    ("tiny-llama/fp16", "embeddings.mlpackage/Manifest.json", "a4c8b957d1a4faed96e64f79e09e4479b55211f3da0b92fd6c8282742258e2c3"),
    ("tiny-llama/fp16", "generation_config.json", "6c9f67b10f4a55fb1ec22d944a9652976fe4217d76283762eb8c926c8f76129c"),
    ("tiny-llama/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "354da6dcd733867f00710e90b3c51a717e08633c060890fe79b9022799cd5bc2"),
    ("tiny-llama/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "6add006f0edba82e785844c3a4745bbdec495a4df2a9e4297245a2358d4093aa"),
    ("tiny-llama/fp16", "lm_head.mlpackage/Manifest.json", "71bfc786023848538a87b29c901cda9081326f2115db42e835d31a1227f0b92a"),
    ("tiny-llama/fp16", "meta.json", "be4e6d51069bf66882737b03f8c584c6fa14119828f9605f7d4517c8e6905be6"),
    ("tiny-llama/fp16", "meta.yaml", "69a60c9f752a85927a1dc2caf354a8a084343710c4081347a11997e16e8ae3c3"),
    ("tiny-llama/fp16", "tokenizer.json", "da00ebd7aa3696f0263b2cff93256dfd80c34987eddc5efabf3cf88c7cf23064"),
    ("tiny-llama/fp16", "tokenizer_config.json", "5eef9868f99ba8b557354470a4cc7c752bc5017f69671cc930e05a13071f58e1"),
    ("tiny-mistral/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "c0d97c628bb9c22de2ab0fef3c988b28a781b94d1f55cab0c4fd307d03862ae9"),
    ("tiny-mistral/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e180c600d219fb1a0eba6cb388724f75d8c9345c2ba36586525cd1b13351470b"),
    ("tiny-mistral/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "67e9bd4fbce1c1b1ed056cc48ed343f39cd75d8bcc81ef3037a7cf23b292613c"),
    ("tiny-mistral/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "9c2e7d390c88d1d6fd6e31890ace63f49c5f771dbedd48e6d32654fc54d5fa80"),
    ("tiny-mistral/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "213a5390e8bf5b2f129f6c5440e4f24f7edf866b54ecfde9f9197893cc6300dc"),
    ("tiny-mistral/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "5357bed4d88f35e8dfa51e744e6fb6a068f566e0b8fb33267bc0f93019eb3070"),
    ("tiny-mistral/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "0879baa52b79b0c0b400bf90e976fd94a4126f7a2792f77c3af83ba9eeb21cb1"),
    ("tiny-mistral/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "c9cc02a683d5e8ae19c7eedd89461a8be8db66028707949e9dea9a54bd026b31"),
    ("tiny-mistral/fp16", "embeddings.mlpackage/Manifest.json", "aff4e1934d42b446160fccdeba0bddd61295d979fc505ab372296f88c878b015"),
    ("tiny-mistral/fp16", "generation_config.json", "92a5c418526e535ff093b96e8d3288d73c828b7968340737b0efe3f8ce94d8a8"),
    ("tiny-mistral/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "e0db2a8525efa57ad48eb4475794abd30a1ecad6cadd5fd0eca0002f4c78ed98"),
    ("tiny-mistral/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "8398f1e1e5b341c12281f6fca9b7dcf5977e5d1114ee662ecdc172765f7bb19f"),
    ("tiny-mistral/fp16", "lm_head.mlpackage/Manifest.json", "c5cb8e524ec621c6339bb30bd1f8eb86a3b1fcd1b3909700a1802df2eab2cbf1"),
    ("tiny-mistral/fp16", "meta.json", "3b14ba9829ab8e1589a38d7cfae17950dcd0b3f437f7f1fb90ac056436584444"),
    ("tiny-mistral/fp16", "meta.yaml", "8839fa37a9d965bde912dc5bf064bbd6c1ab0a0f16d5329ecc01b6133e46a54e"),
    ("tiny-mistral/fp16", "tokenizer.json", "ee3a7fe4a559827f1704dc1ad32253355f37094da624eac19150f3eec8b48d00"),
    ("tiny-mistral/fp16", "tokenizer_config.json", "a32c88a67297bb9c99d8240afc75b2fe99869ae991cbcc1b0d1aacb91d32bb6b"),
    ("tiny-qwen2/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "af27d830b757ad27b7e31800a6ca5f098de8544d5b0565042781f6d23261fbb5"),
    ("tiny-qwen2/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "2247f85613e646ec8d9e456d1ebbab9d8a370975683fe0777bc36cc81fc994cd"),
    ("tiny-qwen2/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "c8a6ee482a949bb04b037eff8212cc57a65f0a01daac7361fc979a3a889613fd"),
    ("tiny-qwen2/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "512b290f609e72c37d2b4a2fa1e974cbf5a4b1e03572d34d3894abfd6b72ecda"),
    ("tiny-qwen2/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "911e93f91bbef384f865f6ab0a86f749fd3692ae43f46c8f6d82cc07d247cf7a"),
    ("tiny-qwen2/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "2b0e5f4cbb74e077381a9e997d4ff1754140a72c9b2f2534606cb8f0286e5bc9"),
    ("tiny-qwen2/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "86a65197299d06921196677456738f918a0ab7d3b05ec5fcd7e6044501daad4e"),
    ("tiny-qwen2/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e568a21149f3bea8bb0bcf692806231726ff63a9f23030fa49a4d82bc1500de1"),
    ("tiny-qwen2/fp16", "embeddings.mlpackage/Manifest.json", "71ea2daa7934dfe68c2975f617ca1407737a170a5669aa8449eaf37cf63553e5"),
    ("tiny-qwen2/fp16", "generation_config.json", "cb3638b66244d66d31ccacef2439f7481cfeb8b0b920a94e63e0c7b26e41d346"),
    ("tiny-qwen2/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/model.mlmodel", "64782cf7098d4a8de6b1b4629c479a7aa092e5b9d7dacb07a7f14b324c44e7c8"),
    ("tiny-qwen2/fp16", "lm_head.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "e568a21149f3bea8bb0bcf692806231726ff63a9f23030fa49a4d82bc1500de1"),
    ("tiny-qwen2/fp16", "lm_head.mlpackage/Manifest.json", "39b5d02d0f4af335009693d8a277964e4b05a745205c80effa33f87ec5a9f2a1"),
    ("tiny-qwen2/fp16", "meta.json", "491fadfcd879eac4e77c59113ec0f548d14736f3d4d14bfeb4c5a4b922be41fc"),
    ("tiny-qwen2/fp16", "meta.yaml", "3170f8947f37e5ae194e49663514cc3a73fafefd99c9abd34457107dd2f7a01e"),
    ("tiny-qwen2/fp16", "tokenizer.json", "74fbe93570a9431144c5823df6ef1a49964a1c7c4092c876eb74497f2d1c285c"),
    ("tiny-qwen2/fp16", "tokenizer_config.json", "107563c51465c3b6589dea9d4e77bc124b278935aec1be292f58e82f62671cc7"),
    ("tiny-qwen3/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "85803b39be846c9b6b418641ed448ea584140710121cf2553898e6710f4d0bee"),
    ("tiny-qwen3/fp16", "combined_chunk_01of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "9edd40645bee35e037e7d9826002f56e9d0efcc0f714f90e57108266f9db274f"),
    ("tiny-qwen3/fp16", "combined_chunk_01of02.mlpackage/Manifest.json", "f88383fb1d3f78adfc3bca3d9425b4a5bf677d44a00c42973f0d821cc1c43e0c"),
    ("tiny-qwen3/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/model.mlmodel", "2e272f7696c6485020ab72a688e7860a9146bf89da21a99dab2f7872a8068b94"),
    ("tiny-qwen3/fp16", "combined_chunk_02of02.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "1f8b55a1e450519cb2bc81e91ef71903105b9a7e3aa5ea61737ace910e4399ed"),
    ("tiny-qwen3/fp16", "combined_chunk_02of02.mlpackage/Manifest.json", "dba555d2b4f0b9219c9274714cae96a272381211d6baca8df5dba178edf552ef"),
    ("tiny-qwen3/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/model.mlmodel", "de91680a284d3b0dbf2d7b111de20a70c76cf1f2dcdb54dcec2cbcf7b25cda61"),
    ("tiny-qwen3/fp16", "embeddings.mlpackage/Data/com.apple.CoreML/weights/weight.bin", "fb06bfb1c874bd7c65b88c0992519735d32e137d5c75a6a13b975a5d112dfbdc"),
    ("tiny-qwen3/fp16", "embeddings.mlpackage/Manifest.json", "11ce6dca9c066e6fc1853fda00fbcf964f916b86efcf4301d7aad4d251292ba5"),
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
