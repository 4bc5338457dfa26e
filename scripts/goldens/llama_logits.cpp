// Reference dump from llama.cpp for dhurandhar's golden tests: the token ids llama.cpp's
// tokenizer gives for a text, and the top-k next-token logits at every position of one
// teacher-forced pass. Built and run by make_goldens.sh against a local llama.cpp build;
// never run in CI.
//
// usage: llama_logits MODEL.gguf TEXT_FILE N_POSITIONS TOP_K [N_GREEDY] > out.json
// (N_POSITIONS 0: token ids only)
// With LORA=ADAPTER.gguf in the environment, that LoRA adapter is applied at scale 1.
//
// With N_GREEDY (the tiny random-weight models): the KV cache is kept in F32 and flash
// attention is off, so the only differences left against an f32 engine are summation
// order and ggml's f16 GELU table; and a second context decodes N_GREEDY tokens greedily,
// one token per llama_decode, after a prompt of the first 16 tokens ("greedy" in the
// output).
#include "llama.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

static void json_string(const std::string & s) {
    std::putchar('"');
    for (unsigned char c : s) {
        if (c == '"' || c == '\\') { std::printf("\\%c", c); }
        else if (c < 0x20) { std::printf("\\u%04x", c); }
        else { std::putchar(c); }
    }
    std::putchar('"');
}

int main(int argc, char ** argv) {
    if (argc != 5 && argc != 6) {
        std::fprintf(stderr, "usage: %s MODEL.gguf TEXT_FILE N_POSITIONS TOP_K [N_GREEDY]\n", argv[0]);
        return 2;
    }
    const int n_greedy = argc == 6 ? std::atoi(argv[5]) : -1;
    const char * model_path = argv[1];
    std::ifstream in(argv[2], std::ios::binary);
    if (!in) { std::fprintf(stderr, "cannot read %s\n", argv[2]); return 1; }
    std::stringstream ss; ss << in.rdbuf();
    const std::string text = ss.str();
    const int n_pos = std::atoi(argv[3]);
    const int top_k = std::atoi(argv[4]);

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    llama_model * model = llama_model_load_from_file(model_path, mp);
    if (!model) { std::fprintf(stderr, "cannot load %s\n", model_path); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    std::vector<llama_token> toks(text.size() + 16);
    int n = llama_tokenize(vocab, text.c_str(), (int) text.size(), toks.data(), (int) toks.size(), true, false);
    if (n < 0) { std::fprintf(stderr, "tokenize failed\n"); return 1; }
    toks.resize(n);

    const int n_eval = std::min(n_pos, n);
    if (n_eval == 0) {  // tokenizer golden only
        std::printf("{\"tool\":\"llama.cpp\",\"n_vocab\":%d,\"tokens\":[", n_vocab);
        for (int i = 0; i < n; i++) std::printf(i ? ",%d" : "%d", toks[i]);
        std::printf("],\"text\":");
        json_string(text);
        std::printf("}\n");
        llama_model_free(model);
        return 0;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_eval;
    cp.n_batch = n_eval;
    cp.n_ubatch = n_eval;
    cp.n_threads = 1;
    cp.n_threads_batch = 1;
    if (n_greedy >= 0) {
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { std::fprintf(stderr, "cannot create context\n"); return 1; }
    if (const char * lora_path = std::getenv("LORA")) {
        llama_adapter_lora * lora = llama_adapter_lora_init(model, lora_path);
        if (!lora) { std::fprintf(stderr, "cannot load LoRA %s\n", lora_path); return 1; }
        float scale = 1.0f;
        if (llama_set_adapters_lora(ctx, &lora, 1, &scale) != 0) {
            std::fprintf(stderr, "cannot apply LoRA %s\n", lora_path); return 1;
        }
    }

    llama_batch batch = llama_batch_init(n_eval, 0, 1);
    for (int i = 0; i < n_eval; i++) {
        batch.token[i] = toks[i];
        batch.pos[i] = i;
        batch.n_seq_id[i] = 1;
        batch.seq_id[i][0] = 0;
        batch.logits[i] = 1;
    }
    batch.n_tokens = n_eval;
    if (llama_decode(ctx, batch) != 0) { std::fprintf(stderr, "decode failed\n"); return 1; }

    std::printf("{\"tool\":\"llama.cpp\",\"n_vocab\":%d,\"tokens\":[", n_vocab);
    for (int i = 0; i < n; i++) std::printf(i ? ",%d" : "%d", toks[i]);
    std::printf("],\"top_k\":%d,\"positions\":[\n", top_k);
    std::vector<int> idx(n_vocab);
    for (int i = 0; i < n_eval; i++) {
        const float * lg = llama_get_logits_ith(ctx, i);
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + top_k, idx.end(),
                          [&](int a, int b) { return lg[a] > lg[b]; });
        std::printf("%s[", i ? ",\n" : "");
        // Tiny models: every digit of an f32; the SmolLM2 golden keeps its 4 decimals.
        for (int j = 0; j < top_k; j++) {
            if (n_greedy >= 0) std::printf(j ? ",[%d,%.9g]" : "[%d,%.9g]", idx[j], lg[idx[j]]);
            else std::printf(j ? ",[%d,%.4f]" : "[%d,%.4f]", idx[j], lg[idx[j]]);
        }
        std::printf("]");
    }
    std::printf("\n]");
    llama_batch_free(batch);
    llama_free(ctx);

    if (n_greedy >= 0) {
        const int n_prompt = std::min(16, n);
        cp.n_ctx = n_prompt + n_greedy;
        cp.n_batch = cp.n_ctx;
        cp.n_ubatch = cp.n_ctx;
        llama_context * gctx = llama_init_from_model(model, cp);
        if (!gctx) { std::fprintf(stderr, "cannot create context\n"); return 1; }
        std::vector<llama_token> prompt(toks.begin(), toks.begin() + n_prompt);
        if (llama_decode(gctx, llama_batch_get_one(prompt.data(), n_prompt)) != 0) {
            std::fprintf(stderr, "decode failed\n"); return 1;
        }
        std::printf(",\"greedy\":{\"prompt_tokens\":%d,\"tokens\":[", n_prompt);
        for (int i = 0; i < n_greedy; i++) {
            const float * lg = llama_get_logits_ith(gctx, -1);
            llama_token best = (llama_token) (std::max_element(lg, lg + n_vocab) - lg);
            std::printf(i ? ",%d" : "%d", best);
            if (llama_decode(gctx, llama_batch_get_one(&best, 1)) != 0) {
                std::fprintf(stderr, "decode failed\n"); return 1;
            }
        }
        std::printf("]}");
        llama_free(gctx);
    }
    std::printf(",\"text\":");
    json_string(text);
    std::printf("}\n");
    llama_model_free(model);
    return 0;
}
