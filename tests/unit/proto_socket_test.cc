#include <thread>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "eep/client.h"
#include "eep/proto.h"

namespace {

using eep::proto::Body;
using namespace std::chrono_literals;

void exchange(const std::string& bind_addr) {
  zmq::context_t ctx(1);
  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(bind_addr);
  std::string addr = router.get(zmq::sockopt::last_endpoint);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(addr);

  Body req = {{"type", "ping"}, {"seq", 1}};
  req["blob"] = Body::binary({0, 0, 7});
  eep::proto::send(dealer, req);

  // ROUTER side: identity frame, then body.
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&item, 1, 5000ms), 1);
  zmq::message_t id, body;
  ASSERT_TRUE(router.recv(id));
  ASSERT_TRUE(id.more());
  ASSERT_TRUE(router.recv(body));
  Body got = eep::proto::decode(body);
  EXPECT_EQ(got["type"], "ping");
  EXPECT_EQ(got["blob"], req["blob"]);

  eep::proto::send_to(router, id.to_string(), eep::proto::ok_reply(got, {{"pong", true}}));
  auto reply = eep::proto::recv(dealer, 5000ms);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["type"], "ping_reply");
  EXPECT_EQ((*reply)["seq"], 1);
  EXPECT_EQ((*reply)["pong"], true);

  // Nothing more: recv times out with nullopt.
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(eep::proto::recv(dealer, 50ms).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 40ms);

  // Garbage from the peer: recv throws kProtocol, and the socket stays usable.
  router.send(zmq::buffer(id.to_string()), zmq::send_flags::sndmore);
  router.send(zmq::str_buffer("\xde\xad\xbe\xef"), zmq::send_flags::none);
  try {
    eep::proto::recv(dealer, 5000ms);
    ADD_FAILURE() << "garbage accepted";
  } catch (const eep::Error& e) {
    EXPECT_EQ(e.code(), eep::ErrorCode::kProtocol);
  }
  // Extra leading frames (e.g. an empty delimiter) are ignored: the last frame is the body.
  router.send(zmq::buffer(id.to_string()), zmq::send_flags::sndmore);
  router.send(zmq::message_t(), zmq::send_flags::sndmore);
  std::string wire = eep::proto::encode({{"type", "late"}});
  router.send(zmq::buffer(wire), zmq::send_flags::none);
  reply = eep::proto::recv(dealer, 5000ms);
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ((*reply)["type"], "late");
}

TEST(ProtoSocket, InprocRoundTrip) { exchange("inproc://proto-test"); }
TEST(ProtoSocket, TcpRoundTrip) { exchange("tcp://127.0.0.1:*"); }

// A caller that passes the time left to its own deadline as call()'s timeout (eep-scale --wait)
// tells "the deadline came" from "the coordinator went quiet" by the clock: a timeout that ended
// even a fraction of a millisecond early reads as the second. So a timeout never ends early.
TEST(Client, CallTimesOutNoEarlierThanItsTimeout) {
  zmq::context_t ctx(1);
  zmq::socket_t silent(ctx, zmq::socket_type::router);  // takes requests, never answers
  silent.set(zmq::sockopt::linger, 0);
  silent.bind("tcp://127.0.0.1:*");
  eep::Client client(silent.get(zmq::sockopt::last_endpoint));
  for (int ms = 1; ms <= 12; ++ms) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      client.call({{"type", "scale_status"}}, std::chrono::milliseconds(ms));
      ADD_FAILURE() << "a silent peer answered";
    } catch (const eep::Error& e) {
      EXPECT_EQ(e.code(), eep::ErrorCode::kTimeout) << e.what();
    }
    EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(ms)) << ms << " ms";
  }
}

}  // namespace
