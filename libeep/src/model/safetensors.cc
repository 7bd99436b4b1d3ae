// Safetensors reader: 8-byte little-endian header length, JSON header, raw little-endian data.
// Files are memory-mapped; the header is validated once so reads need no further checks.
#include "model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>

#include "eep/common.h"
#include "model/convert.h"

namespace eep::model {

namespace {

// The reference implementation's limit; a larger header is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

[[noreturn]] void fail(const std::string& path, const std::string& problem) {
  throw Error(ErrorCode::kInvalidArgument, path + ": " + problem);
}

}  // namespace

size_t safetensors_dtype_size(const std::string& dtype) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(dtype);
  return it == kSizes.end() ? 0 : it->second;
}

size_t SafetensorsTensor::numel() const {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int err = errno;
    ::close(fd);
    fail(path, std::string("cannot stat: ") + std::strerror(err));
  }
  size_ = size_t(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail(path, "file of " + std::to_string(size_) + " bytes is too short for a safetensors header");
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  int err = errno;
  ::close(fd);  // the mapping keeps the file alive
  if (p == MAP_FAILED) fail(path, std::string("cannot mmap: ") + std::strerror(err));
  data_ = static_cast<const uint8_t*>(p);
  try {
    parse_header();
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(data_), size_);
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

void SafetensorsFile::parse_header() {
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data_[i];
  if (header_len > kMaxHeaderBytes)
    fail(path_, "header length " + std::to_string(header_len) + " exceeds the 100 MiB limit");
  if (header_len > size_ - 8)
    fail(path_, "header length " + std::to_string(header_len) + " exceeds the file size " +
                    std::to_string(size_) + " (truncated?)");
  const char* text = reinterpret_cast<const char*>(data_ + 8);
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(text, text + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail(path_, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(path_, "header is not a JSON object");

  const size_t data_start = 8 + size_t(header_len);
  const size_t data_bytes = size_ - data_start;
  std::vector<std::pair<size_t, size_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const auto& e = it.value();
    const std::string where = "tensor '" + name + "'";
    if (!e.is_object()) fail(path_, where + ": entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) fail(path_, where + ": no dtype");
    if (!e.contains("shape") || !e["shape"].is_array()) fail(path_, where + ": no shape");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2)
      fail(path_, where + ": data_offsets must be [begin, end]");

    SafetensorsTensor t;
    t.dtype = e["dtype"].get<std::string>();
    const size_t elem = safetensors_dtype_size(t.dtype);
    if (elem == 0) fail(path_, where + ": unknown dtype '" + t.dtype + "'");
    // Element count with an overflow guard: anything beyond the file size is wrong anyway.
    size_t numel = 1;
    bool too_big = false;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) fail(path_, where + ": shape holds a non-integer or negative");
      uint64_t dim = d.get<uint64_t>();
      t.shape.push_back(int64_t(std::min<uint64_t>(dim, uint64_t(INT64_MAX))));
      if (dim != 0 && numel > size_ / dim) too_big = true;
      numel *= dim;
    }
    for (const auto& o : e["data_offsets"])
      if (!o.is_number_unsigned()) fail(path_, where + ": data_offsets must be non-negative");
    const uint64_t begin = e["data_offsets"][0].get<uint64_t>();
    const uint64_t end = e["data_offsets"][1].get<uint64_t>();
    if (begin > end) fail(path_, where + ": data_offsets begin > end");
    if (end > data_bytes)
      fail(path_, where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                      "] run past the end of the data (" + std::to_string(data_bytes) +
                      " bytes; truncated?)");
    if (too_big || numel * elem != end - begin)
      fail(path_, where + ": shape and dtype " + t.dtype + " need " +
                      (too_big ? std::string("more than the file") : std::to_string(numel * elem)) +
                      " bytes but data_offsets span " + std::to_string(end - begin));
    t.begin = data_start + begin;
    t.end = data_start + end;
    spans.push_back({begin, end});
    tensors_.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    if (spans[i].first < spans[i - 1].second)
      fail(path_, "tensor data overlaps at byte offset " + std::to_string(spans[i].first));
  }
}

const SafetensorsTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

void SafetensorsFile::read_f32(const std::string& name, const SafetensorsTensor& t,
                               float* out) const {
  const uint8_t* src = data_ + t.begin;
  const size_t n = t.numel();
  // NOTE: data may be unaligned (the header length is arbitrary), hence memcpy loads.
  if (t.dtype == "F32") {
    std::memcpy(out, src, n * 4);
  } else if (t.dtype == "BF16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = bf16_to_f32(h);
    }
  } else if (t.dtype == "F16") {
    for (size_t i = 0; i < n; ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      out[i] = f16_to_f32(h);
    }
  } else {
    fail(path_, "tensor '" + name + "' has dtype " + t.dtype +
                    ", which cannot be read as weights (F32, BF16 or F16)");
  }
}

}  // namespace eep::model
