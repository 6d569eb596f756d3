// AsyncHistoryWriter: appends epochs to a HistoryStore on a background
// thread, so the training thread only copies tensors.
//
// A bounded queue gives back-pressure: Submit blocks while `max_pending`
// snapshots wait. A failed write does not stop the writer: its error is
// returned by the next Submit and by Flush, and later epochs are still
// written.
//
// Example:
//   PT_ASSIGN_OR_RETURN(std::unique_ptr<AsyncHistoryWriter> writer,
//                       AsyncHistoryWriter::Create(store.get(), 2));
//   PT_RETURN_IF_ERROR(writer->Submit(meta, std::move(state)));
//   // ... more epochs ...
//   PT_RETURN_IF_ERROR(writer->Flush());  // everything durable, or the error
//
// Thread safety: Submit and Flush may be called from any thread.
#ifndef POSTTRAIN_HISTORY_ASYNC_WRITER_H_
#define POSTTRAIN_HISTORY_ASYNC_WRITER_H_

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "history/env.h"
#include "history/store.h"

namespace posttrain {

class AsyncHistoryWriter {
 public:
  // Starts the writer thread through `env` (Env::Default() when null).
  // `store` must outlive the writer; max_pending below 1 counts as 1.
  // ResourceExhausted when the thread cannot start.
  static absl::StatusOr<std::unique_ptr<AsyncHistoryWriter>> Create(
      HistoryStore* store, size_t max_pending, Env* env = nullptr);
  // Writes what is queued, then stops the thread.
  ~AsyncHistoryWriter();
  AsyncHistoryWriter(const AsyncHistoryWriter&) = delete;
  AsyncHistoryWriter& operator=(const AsyncHistoryWriter&) = delete;

  // Queues one epoch. Returns the error of an earlier write that no call
  // has returned yet (the epoch is queued all the same), else OK.
  absl::Status Submit(EpochMetadata meta, NamedTensors state);

  // Waits until every queued epoch is written. Returns the first error of
  // any write since the writer was created, else OK.
  absl::Status Flush();

  // Epochs written successfully and failed so far.
  size_t written() const;
  size_t failed() const;

 private:
  struct Job {
    EpochMetadata meta;
    NamedTensors state;
  };
  AsyncHistoryWriter(HistoryStore* store, size_t max_pending);
  void Run();

  HistoryStore* const store_;
  const size_t max_pending_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool busy_ = false;
  bool stop_ = false;
  absl::Status unreported_;   // the newest error not yet returned by Submit
  absl::Status first_error_;  // sticky, returned by Flush
  size_t written_ = 0;
  size_t failed_ = 0;
  std::thread thread_;
};

}  // namespace posttrain

#endif  // POSTTRAIN_HISTORY_ASYNC_WRITER_H_
