#include "store/local_server.h"

#include <chrono>

#include "eep/proto.h"

namespace eep {

LocalStoreServer::LocalStoreServer() : sock_(ctx_, zmq::socket_type::router) {
  sock_.set(zmq::sockopt::linger, 0);
  sock_.bind("tcp://127.0.0.1:*");
  address_ = sock_.get(zmq::sockopt::last_endpoint);
  // From here on the socket belongs to the serving thread (thread start is a memory barrier).
  thread_ = std::thread([this] { serve(); });
}

void LocalStoreServer::stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void LocalStoreServer::serve() {
  while (!stop_) {
    zmq::pollitem_t item{sock_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(5));
    if (item.revents & ZMQ_POLLIN) answer_one();
    for (auto& r : waiters_.poll(state_)) proto::send_to(sock_, r.identity, r.body);
  }
  sock_.close();
}

void LocalStoreServer::answer_one() {
  zmq::message_t frame;
  if (!sock_.recv(frame, zmq::recv_flags::dontwait)) return;
  const std::string identity = frame.to_string();
  // The body is the last frame.
  zmq::message_t last;
  for (bool more = frame.more(); more; more = last.more())
    if (!sock_.recv(last, zmq::recv_flags::dontwait)) return;
  proto::Body reply;
  try {
    proto::Body req = proto::decode(last);
    if (req.value("type", "") != "store")
      reply = proto::error_reply(req, ErrorCode::kProtocol, "this store answers only 'store'");
    else if (auto r = waiters_.handle(state_, identity, req))
      reply = std::move(*r);
    else
      return;  // parked until its keys appear or its deadline passes
  } catch (const Error& e) {
    reply = proto::error_reply_undecodable(e.what());
  }
  proto::send_to(sock_, identity, reply);
}

}  // namespace eep
