# Model export without pickle (export.h): safetensors and TorchScript.
# export.cc is part of posttrain::tools (tools/CMakeLists.txt); this name is
# kept for the export test (tests/CMakeLists.txt).
add_library(posttrain_export INTERFACE)
target_link_libraries(posttrain_export INTERFACE posttrain::tools)
