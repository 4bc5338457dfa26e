//! The two real fixtures (skipped locally when not fetched, required in CI).

use dhurandhar_checkpoint::gguf::{GgmlType, GgufFile};
use dhurandhar_checkpoint::safetensors::SafetensorsFile;
use dhurandhar_checkpoint::{
    arch_from_gguf, load_model, locate_tensor, open_checkpoint, Component,
};

#[test]
fn smollm2_gguf_architecture_and_bytes() {
    let Some(path) = dhurandhar_testkit::fixture(dhurandhar_testkit::SMOLLM2_GGUF) else {
        return;
    };
    let g = GgufFile::open(&path).unwrap();
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.get_u64("llama.block_count"), Some(30));
    assert_eq!(g.get_f32("llama.rope.freq_base"), Some(100000.0));
    assert_eq!(
        g.get("tokenizer.ggml.tokens")
            .and_then(|t| t.as_array())
            .map(|a| a.len()),
        Some(49152)
    );
    let types: std::collections::BTreeSet<GgmlType> =
        g.tensors.iter().map(|t| t.ggml_type).collect();
    assert_eq!(
        types,
        [GgmlType::F32, GgmlType::Q4_1, GgmlType::Q8_0]
            .into_iter()
            .collect()
    );
    // The data section ends exactly at the end of the file (last tensor, padded).
    let len = std::fs::metadata(&path).unwrap().len();
    let end = g
        .tensors
        .iter()
        .map(|t| t.offset + t.n_bytes)
        .max()
        .unwrap();
    assert!(
        end <= len && len - end < g.alignment,
        "end {end}, len {len}"
    );

    let (arch, bytes) = load_model(&path).unwrap();
    assert_eq!(arch.family, "llama");
    assert_eq!(arch.num_hidden_layers, 30);
    assert_eq!(arch.hidden_size, 576);
    assert_eq!(arch.num_attention_heads, 9);
    assert_eq!(arch.num_key_value_heads, 3);
    assert_eq!(arch.head_dim, 64);
    assert_eq!(arch.intermediate_size, 1536);
    assert_eq!(arch.vocab_size, 49152);
    assert!(arch.embeddings_tied);
    assert_eq!(arch.source, path.display().to_string());
    // 134.5M parameters counted from the tensors.
    assert!(
        (arch.param_count_b - 0.1345).abs() < 0.001,
        "{}",
        arch.param_count_b
    );
    assert_eq!(bytes.total(), g.total_tensor_bytes());
    assert_eq!(
        arch_from_gguf(&g, &path.display().to_string()).unwrap(),
        arch
    );
    assert_eq!(bytes.lm_head, 0);
    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(bytes.token_embeddings, embd.n_bytes);
    assert_eq!(embd.shape, vec![576, 49152]);
    assert!(bytes.decoder_layers > 0 && bytes.other > 0);
    assert_eq!(
        locate_tensor(&path, "token_embd.weight").unwrap(),
        (embd.offset, embd.n_bytes)
    );
}

#[test]
fn minilm_safetensors_opens_and_is_refused_clearly() {
    let Some(path) = dhurandhar_testkit::fixture(dhurandhar_testkit::MINILM_SAFETENSORS) else {
        return;
    };
    let f = SafetensorsFile::open(&path).unwrap();
    assert_eq!(f.metadata().get("format").map(|s| s.as_str()), Some("pt"));
    let len = std::fs::metadata(&path).unwrap().len();
    assert_eq!(f.data_offset + f.total_tensor_bytes(), len);
    let w = f.tensor("embeddings.word_embeddings.weight").unwrap();
    assert_eq!(w.shape, vec![30522, 384]);
    assert_eq!(w.n_bytes, 30522 * 384 * 4);
    let ck = open_checkpoint(&path).unwrap();
    assert_eq!(ck.total_tensor_bytes(), f.total_tensor_bytes());
    let c = ck.component_bytes();
    assert_eq!(c.token_embeddings, w.n_bytes);
    assert!(ck
        .tensors
        .iter()
        .any(|t| t.component == Component::DecoderLayers));
    let err = load_model(&path).unwrap_err().to_string();
    assert!(err.contains("unsupported architecture: bert"), "{err}");
    assert_eq!(
        locate_tensor(&path, "embeddings.word_embeddings.weight").unwrap(),
        (w.offset, w.n_bytes)
    );
}
