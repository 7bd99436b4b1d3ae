#include <gtest/gtest.h>

#include "eep/common.h"

TEST(Common, ErrorCodeNamesRoundTrip) {
  for (auto code : {eep::ErrorCode::kInvalidArgument, eep::ErrorCode::kTimeout,
                    eep::ErrorCode::kConflict, eep::ErrorCode::kInternal}) {
    EXPECT_EQ(eep::error_code_from_name(eep::error_code_name(code)), code);
  }
  EXPECT_EQ(eep::error_code_from_name("no-such-code"), eep::ErrorCode::kInternal);
}

TEST(Common, CheckThrowsWithCode) {
  try {
    EEP_CHECK(1 + 1 == 3, eep::ErrorCode::kInvalidArgument, "arithmetic");
    FAIL() << "EEP_CHECK did not throw";
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kInvalidArgument);
    EXPECT_STREQ(e.what(), "arithmetic");
  }
}
