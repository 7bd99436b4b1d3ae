// eep-engine: one engine core (one DP rank) on its GPU or CPU.
#include <cstdio>

#include "eep/cli.h"
#include "eep/alloc.h"
#include "eep/common.h"
#include "eep/engine.h"
#include "eep/model.h"

int main(int argc, char** argv) {
  eep::keep_large_buffers_in_heap();
  eep::EngineOptions o;
  std::string write_dir, dtype = "f32";
  CLI::App app{"eep-engine: one eep engine core (one data-parallel rank)", "eep-engine"};
  eep::cli::add_version_flag(app);
  app.add_option("--coord", o.coord, "coordinator endpoint")
      ->envname("EEP_COORD")->capture_default_str();
  app.add_option("--model", o.model, "preset:NAME or a Hugging Face checkpoint directory")
      ->envname("EEP_MODEL")->required();
  app.add_option("--seed", o.seed, "seed of a preset's synthetic weights")
      ->envname("EEP_SEED")->capture_default_str();
  app.add_option("--backend", o.backend, "compute backend")
      ->envname("EEP_BACKEND")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--device", o.device, "GPU index (cuda backend)")
      ->envname("EEP_DEVICE")->check(CLI::Range(0, 1024))->capture_default_str();
  app.add_option("--kv-blocks", o.num_kv_blocks,
                 "KV-cache blocks (0: 512 on cpu; on cuda what fits in --gpu-memory-fraction)")
      ->envname("EEP_KV_BLOCKS")->check(CLI::Range(0, 1 << 24))->capture_default_str();
  app.add_option("--gpu-memory-fraction", o.gpu_memory_fraction,
                 "cuda: share of the GPU's memory this engine may use (weights, KV, workspace)")
      ->envname("EEP_GPU_MEMORY_FRACTION")->check(CLI::Range(0.01, 1.0))->capture_default_str();
  app.add_option("--min-ranks", o.min_ranks,
                 "cuda: smallest group size this engine may shrink to (KV leaves room for its experts)")
      ->envname("EEP_MIN_RANKS")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--block-size", o.block_size, "tokens per KV-cache block")
      ->envname("EEP_BLOCK_SIZE")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--max-num-seqs", o.max_num_seqs, "running sequences per step")
      ->envname("EEP_MAX_NUM_SEQS")->check(CLI::Range(1, 1 << 16))->capture_default_str();
  app.add_option("--max-tokens-per-step", o.max_tokens_per_step,
                 "token budget of one step (chunked prefill)")
      ->envname("EEP_MAX_TOKENS_PER_STEP")->check(CLI::Range(1, 1 << 20))->capture_default_str();
  app.add_option("--max-model-len", o.max_model_len, "context length (0: the model's)")
      ->envname("EEP_MAX_MODEL_LEN")->check(CLI::Range(0, 1 << 24))->capture_default_str();
  app.add_option("--comm-host", o.comm_host, "address peers reach this engine's collectives on")
      ->envname("EEP_COMM_HOST")->capture_default_str();
  app.add_option("--data-comm", o.data_comm,
                 "library of the serving group: gloo, or nccl (cuda backend, one engine per GPU)")
      ->envname("EEP_DATA_COMM")->check(CLI::IsMember({"gloo", "nccl"}))->capture_default_str();
  app.add_flag("--join", o.join,
               "join a serving cluster: the coordinator scales up to fold this engine in")
      ->envname("EEP_JOIN");
  app.add_option("--write-checkpoint", write_dir,
                 "write the model as a Hugging Face checkpoint to DIR and exit")
      ->envname("EEP_WRITE_CHECKPOINT");
  app.add_option("--dtype", dtype, "dtype of --write-checkpoint")
      ->envname("EEP_DTYPE")->check(CLI::IsMember({"f32", "bf16", "f16"}))->capture_default_str();
  int64_t collective_ms = o.collective_timeout.count(), prepare_delay_ms = 0;
  app.add_option("--collective-timeout-ms", collective_ms,
                 "a collective or group formation not done by then fails")
      ->envname("EEP_COLLECTIVE_TIMEOUT_MS")->check(CLI::Range(int64_t{100}, int64_t{3600000}))
      ->capture_default_str();
  app.add_option("--test-prepare-delay-ms", prepare_delay_ms,
                 "fault injection for tests: delay the prepare phase of transitions")
      ->envname("EEP_TEST_PREPARE_DELAY_MS")->check(CLI::Range(int64_t{0}, int64_t{600000}));
  if (auto code = eep::cli::parse(app, argc, argv)) return *code;
  o.collective_timeout = std::chrono::milliseconds(collective_ms);
  o.test_prepare_delay = std::chrono::milliseconds(prepare_delay_ms);

  if (!write_dir.empty()) {
    try {
      auto src = eep::open_weights(o.model, o.seed);
      eep::DType d = dtype == "bf16" ? eep::DType::kBF16
                                     : (dtype == "f16" ? eep::DType::kF16 : eep::DType::kF32);
      eep::write_checkpoint(*src, write_dir, d);
      std::printf("%s\n", write_dir.c_str());
      return eep::kExitOk;
    } catch (const eep::Error& e) {
      std::fprintf(stderr, "eep-engine: %s\n", e.what());
      return e.code() == eep::ErrorCode::kInvalidArgument ? eep::kExitUsage : eep::kExitRuntime;
    }
  }
  return eep::run_engine(o);
}
