#include <gtest/gtest.h>

#include "eep/common.h"
#include "eep/scheduler.h"

namespace eep {
namespace {

TEST(BlockAllocator, LowestIdFirst) {
  BlockAllocator a(4);
  EXPECT_EQ(a.num_blocks(), 4);
  EXPECT_EQ(a.num_free(), 4);
  EXPECT_EQ(a.allocate(), 0);
  EXPECT_EQ(a.allocate(), 1);
  EXPECT_EQ(a.allocate(), 2);
  a.free(1);
  a.free(0);
  // Freed ids come back lowest first, regardless of the order they were freed in.
  EXPECT_EQ(a.allocate(), 0);
  EXPECT_EQ(a.allocate(), 1);
  EXPECT_EQ(a.allocate(), 3);
  EXPECT_EQ(a.num_free(), 0);
  EXPECT_EQ(a.allocate(), std::nullopt);
}

TEST(BlockAllocator, DoubleFreeAndOutOfRangeAreInternalErrors) {
  BlockAllocator a(2);
  int b = *a.allocate();
  a.free(b);
  try {
    a.free(b);
    FAIL() << "double free accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInternal);
  }
  EXPECT_THROW(a.free(1), Error);  // never allocated
  for (int bad : {-1, 2, 100}) {
    try {
      a.free(bad);
      FAIL() << "free(" << bad << ") accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInternal);
    }
  }
  EXPECT_EQ(a.num_free(), 2);
}

TEST(BlockAllocator, ExhaustAndRefill) {
  BlockAllocator a(100);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(a.allocate(), i);
  for (int i = 99; i >= 0; i -= 2) a.free(i);
  EXPECT_EQ(a.num_free(), 50);
  for (int i = 1; i < 100; i += 2) EXPECT_EQ(a.allocate(), i);
}

}  // namespace
}  // namespace eep
