// The header examples are compiled into this binary (header_examples.cc,
// generated); running it lists the headers whose examples compiled, so the
// ctest log shows what is covered.
#include <cstdio>
#include <iterator>

extern const char* const kHeadersWithExamples[];
extern const int kHeadersWithExamplesCount;

int main() {
  for (int i = 0; i < kHeadersWithExamplesCount; ++i) {
    std::printf("compiled the Example of %s\n", kHeadersWithExamples[i]);
  }
  return kHeadersWithExamplesCount > 0 ? 0 : 1;
}
