// Internal: one memory-mapped .safetensors file with a validated header.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "eep/model.h"

namespace eep::model {

struct SafetensorsTensor {
  std::string dtype;  // safetensors spelling ("F32", "BF16", "I64", ...)
  std::vector<int64_t> shape;
  size_t begin = 0;  // byte offsets from the start of the file
  size_t end = 0;
  size_t numel() const;
};

class SafetensorsFile {
 public:
  // Maps the file and validates its header; throws Error(kInvalidArgument, "<path>: <problem>").
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsTensor>& tensors() const { return tensors_; }
  const SafetensorsTensor* find(const std::string& name) const;
  // Converts an F32/BF16/F16 tensor to fp32 into out[0..numel).
  void read_f32(const std::string& name, const SafetensorsTensor& t, float* out) const;

 private:
  void parse_header();

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::map<std::string, SafetensorsTensor> tensors_;
};

// Bytes per element of a safetensors dtype name; 0 when unknown.
size_t safetensors_dtype_size(const std::string& dtype);

}  // namespace eep::model
