//! calib::data: each form of calibration text (plain text, JSONL texts, JSONL chats through the
//! chat template or without one, the built-in corpus), the cap and its determinism, and every
//! refused input, with tiny-llama's tokenizer.

use std::path::{Path, PathBuf};

use anec::calib::data::{load, CalibrationSet, CalibrationSource, DataError};
use tempfile::TempDir;

use super::util::fixture;

/// tiny-llama's tokenizer adds this BOS id.
const BOS: u32 = 507;

fn encode(text: &str, special: bool) -> Vec<u32> {
    let path = fixture("tiny-llama").join("tokenizer.json");
    let tok = tokenizers::Tokenizer::from_file(path).unwrap();
    tok.encode(text, special).unwrap().get_ids().to_vec()
}

fn write(dir: &TempDir, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// All of `path`, uncapped, with the tokenizer in `model`.
fn from_file(path: &Path, model: &Path) -> Result<CalibrationSet, DataError> {
    load(
        &CalibrationSource::File(path.into()),
        model,
        1 << 20,
        1 << 20,
    )
}

/// A model folder with tiny-llama's tokenizer.json and the given other files.
fn model_with(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("tiny-llama").join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    for (name, text) in files {
        write(&dir, name, text);
    }
    dir
}

fn config_with_template(template: &str) -> String {
    serde_json::json!({
        "bos_token": "<|begin_of_text|>",
        "eos_token": {"content": "<|end_of_text|>"},
        "chat_template": template,
    })
    .to_string()
}

const CHAT: &str = r#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " hi "}, {"role": "assistant", "content": "hello"}]}"#;

#[test]
fn plain_text_is_one_document_per_block_between_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        &dir,
        "c.txt",
        "First line.\nSecond line.\n\n\nMiddle.\n  \t\nLast one.\n",
    );
    let set = from_file(&path, &fixture("tiny-llama")).unwrap();
    let docs = ["First line.\nSecond line.", "Middle.", "Last one."];
    // Visited first, last, middle: bit-reversed order spreads a capped sample over the file.
    let expected: Vec<Vec<u32>> = [0, 2, 1].iter().map(|&i| encode(docs[i], true)).collect();
    assert_eq!(set.sequences, expected);
    assert!(set.sequences.iter().all(|s| s[0] == BOS));
    assert_eq!(set.tokens, expected.iter().map(Vec::len).sum::<usize>());
    assert!(
        set.description.contains("plain text, 3 documents"),
        "{}",
        set.description
    );
}

#[test]
fn jsonl_text_records_by_extension_or_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let lines = "{\"text\": \"One record.\"}\n\n{\"text\": \"Two records.\", \"source\": \"x\"}\n";
    let model = fixture("tiny-llama");
    let by_name = from_file(&write(&dir, "c.jsonl", lines), &model).unwrap();
    let by_content = from_file(&write(&dir, "c.txt", lines), &model).unwrap();
    let expected = vec![encode("One record.", true), encode("Two records.", true)];
    assert_eq!(by_name.sequences, expected);
    assert_eq!(by_content.sequences, expected);
    assert!(by_name.description.contains("JSONL, 2 texts and 0 chats"));
}

/// transformers renders with jinja2's trim_blocks and lstrip_blocks, the loop controls,
/// `raise_exception` and `strftime_now`, the special tokens of tokenizer_config.json and
/// `add_generation_prompt=false`; the rendered text is tokenized without adding special tokens.
#[test]
fn chat_messages_are_rendered_with_the_tokenizer_config_template() {
    let template = "{{ bos_token }}\n\
        {% for m in messages %}\n\
        \x20 {% if m.role == 'system' %}{% continue %}{% endif %}\n\
        [{{ m.role.upper() }}] {{ m.content | trim }}{{ eos_token }}\n\
        {% endfor %}\n\
        {% if add_generation_prompt %}[ASSISTANT]{% endif %}\n\
        {{ strftime_now('%d %b %Y') }}";
    let model = model_with(&[("tokenizer_config.json", &config_with_template(template))]);
    let dir = tempfile::tempdir().unwrap();
    let set = from_file(&write(&dir, "chat.jsonl", CHAT), model.path()).unwrap();
    let rendered = "<|begin_of_text|>\n[USER] hi<|end_of_text|>\n[ASSISTANT] hello<|end_of_text|>\n26 Jul 2024";
    assert_eq!(set.sequences, vec![encode(rendered, false)]);
    let bos_count = set.sequences[0].iter().filter(|&&id| id == BOS).count();
    assert_eq!(
        bos_count, 1,
        "the template's BOS, and no second one from the tokenizer"
    );
    assert!(
        set.description.contains("JSONL, 0 texts and 1 chats"),
        "{}",
        set.description
    );
}

#[test]
fn chat_template_jinja_then_json_take_precedence_over_tokenizer_config() {
    let dir = tempfile::tempdir().unwrap();
    let chat = write(&dir, "chat.jsonl", CHAT);
    let config = config_with_template("config");
    let json = r#"{"chat_template": "json {{ messages[1].content }}"}"#;
    let both = model_with(&[
        ("tokenizer_config.json", &config),
        ("chat_template.json", json),
        ("chat_template.jinja", "jinja {{ messages | length }}"),
    ]);
    assert_eq!(
        from_file(&chat, both.path()).unwrap().sequences,
        vec![encode("jinja 3", false)]
    );
    let json_only = model_with(&[
        ("tokenizer_config.json", &config),
        ("chat_template.json", json),
    ]);
    let set = from_file(&chat, json_only.path()).unwrap();
    assert_eq!(set.sequences, vec![encode("json  hi ", false)]);
}

#[test]
fn chat_without_a_template_is_role_content_lines() {
    let dir = tempfile::tempdir().unwrap();
    let set = from_file(&write(&dir, "chat.jsonl", CHAT), &fixture("tiny-llama")).unwrap();
    let lines = "system: Be brief.\nuser:  hi \nassistant: hello";
    assert_eq!(set.sequences, vec![encode(lines, true)]);
    assert!(
        set.description.contains("no chat template"),
        "{}",
        set.description
    );
}

#[test]
fn builtin_corpus_is_capped_deterministically_in_bounded_sequences() {
    let model = fixture("tiny-llama");
    let set = load(&CalibrationSource::Builtin, &model, 2048, 256).unwrap();
    assert_eq!(set.tokens, 2048);
    assert_eq!(set.sequences.iter().map(Vec::len).sum::<usize>(), 2048);
    assert!(set
        .sequences
        .iter()
        .all(|s| !s.is_empty() && s.len() <= 256));
    assert!(
        set.sequences.iter().all(|s| s[0] == BOS),
        "8 first pieces of documents"
    );
    assert_eq!(set.shortfall(2048), None);
    assert!(
        set.description.starts_with("built-in corpus (prose "),
        "{}",
        set.description
    );
    assert!(
        set.description.contains("no chat template"),
        "{}",
        set.description
    );
    let again = load(&CalibrationSource::Builtin, &model, 2048, 256).unwrap();
    assert_eq!(set, again);
    // A different sequence length cuts the same documents differently, not other documents.
    let longer = load(&CalibrationSource::Builtin, &model, 2048, 512).unwrap();
    assert!(longer.sequences[0].starts_with(&set.sequences[0]));
}

#[test]
fn fewer_tokens_than_asked_is_a_warning_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "short.txt", "Only a few words here.");
    let set = load(
        &CalibrationSource::File(path),
        &fixture("tiny-llama"),
        2048,
        256,
    )
    .unwrap();
    let n = encode("Only a few words here.", true).len();
    assert_eq!(set.tokens, n);
    let warning = set.shortfall(2048).expect("a shortfall");
    assert!(warning.contains(&format!("only {n} tokens")), "{warning}");
    assert!(warning.contains("2048"), "{warning}");
    assert!(
        set.description.contains(&format!("{n} of {n} tokens")),
        "{}",
        set.description
    );
}

/// Each refused input names the file (and the line, for JSONL).
#[test]
fn bad_calibration_files_are_refused_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-llama");
    let refused = |name: &str, contents: &[u8]| {
        let path = write(&dir, name, contents);
        let err = from_file(&path, &model).expect_err(name);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
        err
    };

    let missing = dir.path().join("missing.txt");
    match from_file(&missing, &model) {
        Err(DataError::Read { path, source }) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(refused("empty.txt", b""), DataError::Empty { .. }));
    assert!(matches!(
        refused("blank.txt", b" \n\t\n"),
        DataError::Empty { .. }
    ));
    assert!(matches!(
        refused("blank.jsonl", b"{\"text\": \"\"}\n"),
        DataError::Empty { .. }
    ));
    assert!(matches!(
        refused("latin1.txt", b"caf\xe9 au lait"),
        DataError::NotUtf8 { offset: 3, .. }
    ));
    let err = refused(
        "neither.jsonl",
        b"{\"text\": \"ok\"}\n{\"prompt\": \"x\"}\n",
    );
    assert!(matches!(err, DataError::Record { line: 2, .. }), "{err}");
    assert!(
        err.to_string()
            .contains("neither `text` nor `messages` (keys: prompt)"),
        "{err}"
    );
    let err = refused(
        "broken.jsonl",
        b"{\"text\": \"ok\"}\n\n{\"text\": \"no end\n",
    );
    assert!(matches!(err, DataError::Json { line: 3, .. }), "{err}");
    let err = refused("role.jsonl", br#"{"messages": [{"role": "user"}]}"#);
    assert!(
        err.to_string()
            .contains(":1: message 0 of `messages` has no string `content`"),
        "{err}"
    );
    let err = refused("list.jsonl", br#"{"messages": "hi"}"#);
    assert!(err.to_string().contains("must be a list"), "{err}");
    let err = refused("array.jsonl", b"[1, 2]\n");
    assert!(
        err.to_string()
            .contains("expected a JSON object, found a list"),
        "{err}"
    );
}

#[test]
fn a_template_that_fails_names_the_template_and_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let chat = write(
        &dir,
        "chat.jsonl",
        format!("{{\"text\": \"fine\"}}\n{CHAT}\n"),
    );
    let raising = "{% for m in messages %}{% if m.role == 'system' %}\
        {{ raise_exception('System role not supported') }}{% endif %}{% endfor %}";
    let model = model_with(&[("chat_template.jinja", raising)]);
    let err = from_file(&chat, model.path()).unwrap_err().to_string();
    let template = model.path().join("chat_template.jinja");
    assert!(err.contains(&template.display().to_string()), "{err}");
    assert!(err.contains(&format!("{}:2", chat.display())), "{err}");
    assert!(err.contains("System role not supported"), "{err}");

    let model = model_with(&[("chat_template.jinja", "{% for m in messages %}unclosed")]);
    let err = from_file(&chat, model.path()).unwrap_err();
    assert!(matches!(err, DataError::Template { .. }), "{err}");
    assert!(err.to_string().contains("chat_template.jinja"), "{err}");
}

#[test]
fn zero_limits_and_a_missing_tokenizer_are_refused() {
    let model = fixture("tiny-llama");
    let zero = load(&CalibrationSource::Builtin, &model, 0, 256).unwrap_err();
    assert!(
        zero.to_string().contains("token count must be at least 1"),
        "{zero}"
    );
    let zero = load(&CalibrationSource::Builtin, &model, 2048, 0).unwrap_err();
    assert!(
        zero.to_string()
            .contains("sequence length must be at least 1"),
        "{zero}"
    );
    let empty = tempfile::tempdir().unwrap();
    let err = load(&CalibrationSource::Builtin, empty.path(), 2048, 256).unwrap_err();
    assert!(matches!(err, DataError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}
