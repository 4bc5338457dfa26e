//! Architecture inference for each supported family, from hand-written config.json
//! strings (values as published on the model cards) and hand-built GGUF files.

use dhurandhar_checkpoint::gguf::{GgmlType, GgufBuilder, GgufValue};
use dhurandhar_checkpoint::{arch_from_config_json, load_model};
use dhurandhar_model::{AttentionKind, KvSource, LayerTypeName, ModelArchitecture};

fn cfg(json: &str) -> ModelArchitecture {
    arch_from_config_json(json, "config.json").unwrap_or_else(|e| panic!("{e}"))
}

fn kinds(a: &ModelArchitecture) -> Vec<AttentionKind> {
    a.layers().iter().map(|l| l.attention).collect()
}

#[test]
fn llama_smollm2() {
    let a = cfg(
        r#"{"model_type":"llama","hidden_size":576,"intermediate_size":1536,
        "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,
        "vocab_size":49152,"max_position_embeddings":8192,"tie_word_embeddings":true,
        "_name_or_path":"HuggingFaceTB/SmolLM2-135M-Instruct"}"#,
    );
    assert_eq!(a.name, "SmolLM2-135M-Instruct");
    assert_eq!(
        (a.num_hidden_layers, a.hidden_size, a.head_dim),
        (30, 576, 64)
    );
    assert_eq!((a.num_attention_heads, a.num_key_value_heads), (9, 3));
    assert_eq!(
        (a.intermediate_size, a.vocab_size, a.max_context_tokens),
        (1536, 49152, 8192)
    );
    assert!(a.embeddings_tied);
    assert_eq!(a.source, "config.json");
    // Geometry estimate: 49152*576 + 30*(2*576*576 + 2*576*192 + 3*576*1536).
    let want =
        49152.0 * 576.0 + 30.0 * (2.0 * 576.0 * 576.0 + 2.0 * 576.0 * 192.0 + 3.0 * 576.0 * 1536.0);
    assert!(
        (a.param_count_b * 1e9 - want).abs() < 1.0,
        "{}",
        a.param_count_b
    );
    // llama defaults to an untied head when the key is absent.
    let b = cfg(
        r#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}"#,
    );
    assert!(!b.embeddings_tied);
    assert_eq!(b.num_key_value_heads, 4, "kv heads default to heads");
}

#[test]
fn qwen2_5_sliding_window_disabled() {
    let a = cfg(
        r#"{"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,
        "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,
        "vocab_size":151936,"max_position_embeddings":32768,"sliding_window":32768,
        "use_sliding_window":false,"max_window_layers":21,"tie_word_embeddings":true}"#,
    );
    assert_eq!((a.head_dim, a.sliding_window), (64, 0));
    assert!(a.layer_types.is_none());
    // Enabled: layers from max_window_layers on slide.
    let b = cfg(
        r#"{"model_type":"qwen2","hidden_size":64,"intermediate_size":128,
        "num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,
        "vocab_size":100,"sliding_window":16,"use_sliding_window":true,"max_window_layers":2}"#,
    );
    use AttentionKind::*;
    assert_eq!(kinds(&b), vec![Global, Global, Sliding, Sliding]);
}

#[test]
fn qwen3_head_dim_differs_from_hidden_over_heads() {
    let a = cfg(
        r#"{"model_type":"qwen3","hidden_size":1024,"intermediate_size":3072,
        "num_hidden_layers":28,"num_attention_heads":16,"num_key_value_heads":8,"head_dim":128,
        "vocab_size":151936,"tie_word_embeddings":true,"sliding_window":null}"#,
    );
    assert_eq!(a.head_dim, 128);
    assert_eq!(a.kv_cache_bytes(1000, 16.0), 28 * 1000 * 2 * 8 * 128 * 2);
}

#[test]
fn qwen3_moe() {
    let a = cfg(
        r#"{"model_type":"qwen3_moe","hidden_size":2048,"intermediate_size":6144,
        "moe_intermediate_size":768,"num_hidden_layers":48,"num_attention_heads":32,
        "num_key_value_heads":4,"head_dim":128,"num_experts":128,"num_experts_per_tok":8,
        "decoder_sparse_step":1,"mlp_only_layers":[],"vocab_size":151936,"tie_word_embeddings":false}"#,
    );
    assert!(a.is_moe);
    assert_eq!(
        (
            a.num_experts,
            a.num_active_experts,
            a.expert_intermediate_size
        ),
        (128, 8, 768)
    );
    assert_eq!(a.moe_layers(), 48);
    let b = cfg(
        r#"{"model_type":"qwen3_moe","hidden_size":64,"intermediate_size":128,
        "moe_intermediate_size":32,"num_hidden_layers":4,"num_attention_heads":4,
        "num_experts":8,"num_experts_per_tok":2,"mlp_only_layers":[0],"vocab_size":100}"#,
    );
    assert_eq!(b.moe_layers(), 3);
}

#[test]
fn mixtral() {
    let a = cfg(
        r#"{"model_type":"mixtral","hidden_size":4096,"intermediate_size":14336,
        "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
        "num_local_experts":8,"num_experts_per_tok":2,"vocab_size":32000,"sliding_window":null,
        "tie_word_embeddings":false}"#,
    );
    assert!(a.is_moe && !a.embeddings_tied);
    assert_eq!(
        (a.num_experts, a.num_active_experts, a.expert_ffn()),
        (8, 2, 14336)
    );
    assert_eq!(a.sliding_window, 0);
    // ~46.7B total parameters from the geometry.
    assert!((a.param_count_b - 46.7).abs() < 0.2, "{}", a.param_count_b);
}

#[test]
fn gemma2_alternates_sliding_and_global() {
    let a = cfg(
        r#"{"model_type":"gemma2","hidden_size":2304,"intermediate_size":9216,
        "num_hidden_layers":26,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,
        "sliding_window":4096,"vocab_size":256000}"#,
    );
    assert!(a.embeddings_tied, "gemma ties by default");
    assert_eq!(a.sliding_window, 4096);
    let k = kinds(&a);
    assert_eq!(k[0], AttentionKind::Sliding);
    assert_eq!(k[1], AttentionKind::Global);
    assert_eq!(
        k.iter().filter(|&&x| x == AttentionKind::Global).count(),
        13
    );
}

#[test]
fn gemma3_multimodal_wrapper_uses_text_config() {
    let a = cfg(
        r#"{"model_type":"gemma3","architectures":["Gemma3ForConditionalGeneration"],
        "text_config":{"model_type":"gemma3_text","hidden_size":2560,"intermediate_size":10240,
          "num_hidden_layers":34,"num_attention_heads":8,"num_key_value_heads":4,"head_dim":256,
          "sliding_window":1024,"sliding_window_pattern":6,"vocab_size":262208},
        "vision_config":{"model_type":"siglip_vision_model","hidden_size":1152}}"#,
    );
    assert_eq!(a.family, "gemma3");
    assert_eq!(
        (a.num_hidden_layers, a.hidden_size, a.sliding_window),
        (34, 2560, 1024)
    );
    let globals: Vec<usize> = a
        .layers()
        .iter()
        .filter(|l| l.attention == AttentionKind::Global)
        .map(|l| l.index)
        .collect();
    // Every sixth layer is global; the last (33) is not forced global.
    assert_eq!(globals, vec![5, 11, 17, 23, 29]);
}

#[test]
fn gemma3n_layer_types_shared_kv_and_ple() {
    let mut types = Vec::new();
    for _ in 0..6 {
        types.extend(["\"sliding_attention\""; 4]);
        types.push("\"full_attention\"");
    }
    let json = format!(
        r#"{{"model_type":"gemma3n","text_config":{{"model_type":"gemma3n_text","hidden_size":2048,
        "intermediate_size":[{ffn}],"num_hidden_layers":30,"num_attention_heads":8,
        "num_key_value_heads":2,"head_dim":256,"sliding_window":512,"layer_types":[{types}],
        "num_kv_shared_layers":10,"hidden_size_per_layer_input":256,"vocab_size":262400,
        "vocab_size_per_layer_input":262144}},"audio_config":{{}},"vision_config":{{}}}}"#,
        ffn = vec!["8192"; 30].join(","),
        types = types.join(",")
    );
    let a = cfg(&json);
    assert_eq!(a.family, "gemma3n");
    assert_eq!(a.intermediate_size, 8192);
    assert!(
        a.intermediate_size_per_layer.is_none(),
        "uniform list collapses"
    );
    assert_eq!(a.shared_kv_last_n_layers, 10);
    assert!(a.has_ple);
    assert_eq!((a.ple_hidden_size, a.ple_vocab_size), (256, 262144));
    let l = a.layers();
    assert_eq!(l.iter().filter(|x| x.kv == KvSource::Fresh).count(), 20);
    assert_eq!(l[4].attention, AttentionKind::Global);
    assert_eq!(l[20].kv, KvSource::SharedFrom(18));
    assert_eq!(l[24].kv, KvSource::SharedFrom(19));
    assert_eq!(
        a.layer_types.as_ref().unwrap()[..5],
        [
            LayerTypeName::SlidingAttention,
            LayerTypeName::SlidingAttention,
            LayerTypeName::SlidingAttention,
            LayerTypeName::SlidingAttention,
            LayerTypeName::FullAttention
        ]
    );
}

#[test]
fn gemma4_style_global_geometry() {
    // The fields a Gemma-4-style config adds on top of Gemma 3n: wider global heads and
    // fewer global KV heads.
    let a = cfg(
        r#"{"model_type":"gemma4","text_config":{"model_type":"gemma4_text",
        "hidden_size":1536,"intermediate_size":6144,"num_hidden_layers":10,"num_attention_heads":8,
        "num_key_value_heads":2,"head_dim":256,"global_head_dim":512,"num_global_key_value_heads":1,
        "sliding_window":512,"sliding_window_pattern":5,"num_kv_shared_layers":4,
        "hidden_size_per_layer_input":256,"vocab_size":262144}}"#,
    );
    assert_eq!((a.global_head_dim(), a.global_kv_heads()), (512, 1));
    let g: Vec<usize> = a
        .layers()
        .iter()
        .filter(|l| l.attention == AttentionKind::Global)
        .map(|l| l.index)
        .collect();
    assert_eq!(g, vec![4, 9]);
    assert_eq!(a.layers()[4].head_dim, 512);
}

#[test]
fn phi3_slides_every_layer() {
    let a = cfg(
        r#"{"model_type":"phi3","hidden_size":3072,"intermediate_size":8192,
        "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":32,
        "vocab_size":32064,"sliding_window":2047,"max_position_embeddings":4096,
        "tie_word_embeddings":false}"#,
    );
    assert_eq!(a.sliding_window, 2047);
    assert!(kinds(&a).iter().all(|&k| k == AttentionKind::Sliding));
    assert_eq!(a.kv_cache_bytes(4096, 16.0), 32 * 2047 * 2 * 32 * 96 * 2);
}

#[test]
fn granite() {
    let a = cfg(
        r#"{"model_type":"granite","hidden_size":2048,"intermediate_size":8192,
        "num_hidden_layers":40,"num_attention_heads":32,"num_key_value_heads":8,
        "vocab_size":49159,"tie_word_embeddings":true,"max_position_embeddings":131072}"#,
    );
    assert_eq!(
        (a.family.as_str(), a.head_dim, a.max_context_tokens),
        ("granite", 64, 131072)
    );
}

#[test]
fn falcon_h1_parallel_hybrid() {
    let a = cfg(
        r#"{"model_type":"falcon_h1","hidden_size":1024,"intermediate_size":2048,
        "num_hidden_layers":36,"num_attention_heads":8,"num_key_value_heads":2,"head_dim":64,
        "mamba_d_state":128,"mamba_d_ssm":1536,"mamba_n_heads":24,"mamba_d_head":64,
        "mamba_n_groups":1,"mamba_d_conv":4,"vocab_size":32784}"#,
    );
    assert!(a.has_mamba);
    assert_eq!((a.num_attention_layers, a.mamba_num_layers), (36, 36));
    assert_eq!(a.mamba_state_dim, 1536 * 128);
    assert_eq!(a.mamba_conv_state_dim, 3 * (1536 + 2 * 128));
}

#[test]
fn zamba2_hybrid_blocks() {
    let types: Vec<&str> = (0..12)
        .map(|i| {
            if i % 6 == 5 {
                "\"hybrid\""
            } else {
                "\"mamba\""
            }
        })
        .collect();
    let a = cfg(&format!(
        r#"{{"model_type":"zamba2","hidden_size":2048,"intermediate_size":8192,"num_hidden_layers":12,
        "num_attention_heads":32,"num_key_value_heads":32,"attention_head_dim":128,
        "layers_block_type":[{}],"mamba_d_state":128,"mamba_expand":2,"mamba_ngroups":1,
        "mamba_d_conv":4,"vocab_size":32000}}"#,
        types.join(",")
    ));
    assert_eq!(a.head_dim, 128);
    assert_eq!((a.num_attention_layers, a.mamba_num_layers), (2, 12));
    assert_eq!(a.mamba_state_dim, 4096 * 128);
    assert_eq!(
        a.layers()
            .iter()
            .filter(|l| l.kv == KvSource::Fresh)
            .count(),
        2
    );
}

#[test]
fn jamba_periods() {
    let a = cfg(
        r#"{"model_type":"jamba","hidden_size":4096,"intermediate_size":14336,
        "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,
        "attn_layer_period":8,"attn_layer_offset":4,"expert_layer_period":2,"expert_layer_offset":1,
        "num_experts":16,"num_experts_per_tok":2,"mamba_d_state":16,"mamba_d_conv":4,
        "mamba_expand":2,"vocab_size":65536}"#,
    );
    assert_eq!((a.num_attention_layers, a.mamba_num_layers), (4, 28));
    assert_eq!(a.moe_layers(), 16);
    assert_eq!(a.mamba_state_dim, 8192 * 16);
    let attn: Vec<usize> = a
        .layers()
        .iter()
        .filter(|l| l.kv == KvSource::Fresh)
        .map(|l| l.index)
        .collect();
    assert_eq!(attn, vec![4, 12, 20, 28]);
}

#[test]
fn refusals_are_clear() {
    let e = arch_from_config_json(r#"{"model_type":"bert","hidden_size":384}"#, "c.json")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("c.json") && e.contains("unsupported architecture: bert"),
        "{e}"
    );
    let e = arch_from_config_json("{", "c.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not valid JSON"), "{e}");
    let e = arch_from_config_json(r#"{"model_type":"llama","hidden_size":64}"#, "c.json")
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing `num_hidden_layers`"), "{e}");
    let e = arch_from_config_json(
        r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":"x","num_attention_heads":4,"vocab_size":1,"intermediate_size":1}"#,
        "c.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("num_hidden_layers") && e.contains("integer"),
        "{e}"
    );
    // The contract's own validation still applies (kv heads must divide heads).
    let e = arch_from_config_json(
        r#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"num_attention_heads":6,"num_key_value_heads":4,"vocab_size":10,"intermediate_size":8}"#,
        "c.json",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("num_key_value_heads"), "{e}");
}

// ---------------------------------------------------------------- GGUF metadata

fn s(v: &str) -> GgufValue {
    GgufValue::String(v.into())
}
fn u(v: u32) -> GgufValue {
    GgufValue::U32(v)
}
fn arr(v: &[u32]) -> GgufValue {
    GgufValue::Array(v.iter().map(|&x| GgufValue::U32(x)).collect())
}

fn gguf_load(b: GgufBuilder) -> Result<ModelArchitecture, String> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, b.to_bytes().unwrap()).unwrap();
    load_model(&p).map(|(a, _)| a).map_err(|e| e.to_string())
}

fn base(arch: &str, layers: u32) -> GgufBuilder {
    GgufBuilder::new()
        .kv("general.architecture", s(arch))
        .kv(&format!("{arch}.block_count"), u(layers))
        .kv(&format!("{arch}.embedding_length"), u(64))
        .kv(&format!("{arch}.attention.head_count"), u(4))
        .kv(&format!("{arch}.context_length"), u(4096))
        .tensor_filled("token_embd.weight", &[64, 100], GgmlType::Q8_0)
}

#[test]
fn gguf_qwen2_untied() {
    let a = gguf_load(
        base("qwen2", 2)
            .kv("qwen2.attention.head_count_kv", u(2))
            .kv("qwen2.feed_forward_length", u(128))
            .tensor_filled("output.weight", &[64, 100], GgmlType::Q8_0)
            .tensor_filled("blk.0.attn_q.weight", &[64, 64], GgmlType::F16),
    )
    .unwrap();
    assert_eq!(
        (
            a.family.as_str(),
            a.num_key_value_heads,
            a.head_dim,
            a.vocab_size
        ),
        ("qwen2", 2, 16, 100)
    );
    assert!(!a.embeddings_tied);
    assert_eq!(a.max_context_tokens, 4096);
    assert!((a.param_count_b * 1e9 - (6400.0 * 2.0 + 4096.0)).abs() < 0.5);
}

#[test]
fn gguf_gemma3_fixed_period() {
    let a = gguf_load(
        base("gemma3", 12)
            .kv("gemma3.attention.head_count_kv", u(1))
            .kv("gemma3.attention.key_length", u(256))
            .kv("gemma3.attention.sliding_window", u(512))
            .kv("gemma3.feed_forward_length", u(256)),
    )
    .unwrap();
    assert_eq!(a.head_dim, 256);
    use AttentionKind::*;
    let k = kinds(&a);
    assert_eq!(k[5], Global);
    assert_eq!(k[11], Global);
    assert_eq!(k.iter().filter(|&&x| x == Sliding).count(), 10);
}

#[test]
fn gguf_gemma3n_pattern_array_shared_kv_ple_and_ffn_array() {
    let pattern = GgufValue::Array((0..10).map(|i| GgufValue::Bool(i % 5 != 4)).collect());
    let ffn: Vec<u32> = (0..10).map(|i| if i < 5 { 256 } else { 512 }).collect();
    let a = gguf_load(
        base("gemma3n", 10)
            .kv("gemma3n.attention.head_count_kv", u(2))
            .kv("gemma3n.attention.key_length", u(32))
            .kv("gemma3n.attention.sliding_window", u(64))
            .kv("gemma3n.attention.sliding_window_pattern", pattern)
            .kv("gemma3n.attention.shared_kv_layers", u(4))
            .kv("gemma3n.embedding_length_per_layer_input", u(8))
            .kv("gemma3n.feed_forward_length", arr(&ffn))
            .tensor_filled("per_layer_token_embd.weight", &[80, 90], GgmlType::F16),
    )
    .unwrap();
    assert_eq!(a.layers()[4].attention, AttentionKind::Global);
    assert_eq!(a.layers()[3].attention, AttentionKind::Sliding);
    assert_eq!(a.shared_kv_last_n_layers, 4);
    assert!(a.has_ple);
    assert_eq!((a.ple_hidden_size, a.ple_vocab_size), (8, 90));
    assert_eq!(
        a.intermediate_size_per_layer.as_deref(),
        Some(&[256, 256, 256, 256, 256, 512, 512, 512, 512, 512][..])
    );
    assert_eq!(a.layers()[7].ffn_intermediate, 512);
}

#[test]
fn gguf_qwen3moe_active_params_from_expert_tensors() {
    let mut b = base("qwen3moe", 2)
        .kv("qwen3moe.attention.head_count_kv", u(2))
        .kv("qwen3moe.feed_forward_length", u(128))
        .kv("qwen3moe.expert_count", u(8))
        .kv("qwen3moe.expert_used_count", u(2))
        .kv("qwen3moe.expert_feed_forward_length", u(32));
    for i in 0..2 {
        for n in ["gate", "up"] {
            b = b.tensor_filled(
                &format!("blk.{i}.ffn_{n}_exps.weight"),
                &[64, 32, 8],
                GgmlType::Q8_0,
            );
        }
        b = b.tensor_filled(
            &format!("blk.{i}.ffn_down_exps.weight"),
            &[32, 64, 8],
            GgmlType::Q8_0,
        );
        b = b.tensor_filled(
            &format!("blk.{i}.ffn_gate_inp.weight"),
            &[64, 8],
            GgmlType::F32,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("moe.gguf");
    std::fs::write(&p, b.to_bytes().unwrap()).unwrap();
    let (a, bytes) = load_model(&p).unwrap();
    assert!(a.is_moe);
    assert_eq!(
        (
            a.num_experts,
            a.num_active_experts,
            a.expert_intermediate_size
        ),
        (8, 2, 32)
    );
    let routed = 2.0 * 3.0 * 64.0 * 32.0 * 8.0;
    let total = 6400.0 + routed + 2.0 * 512.0;
    assert!((a.param_count_b * 1e9 - total).abs() < 0.5);
    assert!((a.active_param_count_b * 1e9 - (total - routed * 0.75)).abs() < 0.5);
    assert_eq!(bytes.experts, 6 * (64 / 32 * 34 * 32 * 8));
    assert_eq!(bytes.decoder_layers, 2 * 512 * 4);
}

#[test]
fn gguf_sequential_hybrid_from_per_layer_kv_heads() {
    let a = gguf_load(
        base("granitehybrid", 4)
            .kv("granitehybrid.attention.head_count_kv", arr(&[0, 0, 0, 2]))
            .kv("granitehybrid.feed_forward_length", u(128))
            .kv("granitehybrid.ssm.state_size", u(16))
            .kv("granitehybrid.ssm.inner_size", u(128))
            .kv("granitehybrid.ssm.conv_kernel", u(4))
            .kv("granitehybrid.ssm.group_count", u(1)),
    )
    .unwrap();
    assert!(a.has_mamba);
    assert_eq!(
        (
            a.num_attention_layers,
            a.mamba_num_layers,
            a.num_key_value_heads
        ),
        (1, 3, 2)
    );
    assert_eq!(a.mamba_state_dim, 128 * 16);
    assert_eq!(a.mamba_conv_state_dim, 3 * (128 + 32));
    assert_eq!(a.layers()[3].kv, KvSource::Fresh);
    assert_eq!(a.layers()[0].kv, KvSource::None);
}

#[test]
fn gguf_pure_mamba_has_no_kv() {
    let a = gguf_load(
        GgufBuilder::new()
            .kv("general.architecture", s("mamba"))
            .kv("mamba.block_count", u(3))
            .kv("mamba.embedding_length", u(64))
            .kv("mamba.ssm.state_size", u(16))
            .kv("mamba.ssm.inner_size", u(128))
            .kv("mamba.ssm.conv_kernel", u(4))
            .tensor_filled("token_embd.weight", &[64, 100], GgmlType::F32),
    )
    .unwrap();
    assert_eq!((a.num_attention_layers, a.mamba_num_layers), (0, 3));
    assert_eq!(a.kv_cache_bytes(10_000, 16.0), 0);
}

#[test]
fn gguf_refusals() {
    let e = gguf_load(base("deepseek2", 2)).unwrap_err();
    assert!(
        e.contains("m.gguf") && e.contains("unsupported architecture: deepseek2"),
        "{e}"
    );
    let e = gguf_load(GgufBuilder::new().tensor_filled("w", &[4], GgmlType::F32)).unwrap_err();
    assert!(e.contains("general.architecture"), "{e}");
    let e = gguf_load(base("llama", 3).kv("llama.feed_forward_length", arr(&[1, 2]))).unwrap_err();
    assert!(
        e.contains("2 per-layer entries but block_count is 3"),
        "{e}"
    );
    let e = gguf_load(base("llama", 3).kv("llama.feed_forward_length", s("wide"))).unwrap_err();
    assert!(
        e.contains("llama.feed_forward_length") && e.contains("string"),
        "{e}"
    );
}

#[test]
fn gguf_missing_ffn_is_named() {
    let e = gguf_load(base("llama", 2)).unwrap_err();
    assert!(e.contains("llama.feed_forward_length"), "{e}");
}
