#include "history/async_writer.h"

#include <utility>

namespace posttrain {

AsyncHistoryWriter::AsyncHistoryWriter(HistoryStore* store, size_t max_pending)
    : store_(store), max_pending_(max_pending < 1 ? 1 : max_pending) {}

absl::StatusOr<std::unique_ptr<AsyncHistoryWriter>> AsyncHistoryWriter::Create(
    HistoryStore* store, size_t max_pending, Env* env) {
  if (env == nullptr) env = Env::Default();
  std::unique_ptr<AsyncHistoryWriter> w(
      new AsyncHistoryWriter(store, max_pending));
  AsyncHistoryWriter* raw = w.get();
  absl::StatusOr<std::thread> t = env->StartThread([raw] { raw->Run(); });
  if (!t.ok()) return t.status();
  w->thread_ = std::move(*t);
  return w;
}

AsyncHistoryWriter::~AsyncHistoryWriter() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::Status AsyncHistoryWriter::Submit(EpochMetadata meta,
                                        NamedTensors state) {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return queue_.size() < max_pending_; });
  queue_.push_back({std::move(meta), std::move(state)});
  absl::Status s = std::move(unreported_);
  unreported_ = absl::OkStatus();
  l.unlock();
  cv_.notify_all();
  return s;
}

absl::Status AsyncHistoryWriter::Flush() {
  std::unique_lock<std::mutex> l(mu_);
  cv_.wait(l, [&] { return queue_.empty() && !busy_; });
  unreported_ = absl::OkStatus();
  return first_error_;
}

size_t AsyncHistoryWriter::written() const {
  std::lock_guard<std::mutex> l(mu_);
  return written_;
}

size_t AsyncHistoryWriter::failed() const {
  std::lock_guard<std::mutex> l(mu_);
  return failed_;
}

void AsyncHistoryWriter::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and nothing left
    Job job = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    l.unlock();
    cv_.notify_all();  // room in the queue
    // Append never throws (it converts exceptions), so nothing can escape
    // this thread and terminate the process.
    absl::Status s = store_->Append(job.meta, std::move(job.state));
    l.lock();
    busy_ = false;
    if (s.ok()) {
      ++written_;
    } else {
      ++failed_;
      unreported_ = s;
      if (first_error_.ok()) first_error_ = s;
    }
    cv_.notify_all();
  }
}

}  // namespace posttrain
