# A precompiled <torch/torch.h> for the translation units that include it.
#
# Parsing <torch/torch.h> is about a third of such a unit's compile time
# (measured on the 2-core VM, g++ 12 -O3: tuner/pipeline.cc 19.0 s plain,
# 13.6 s with the PCH; building the PCH once takes 28 s and 570 MB). Only
# units that already include <torch/torch.h> get it, so no unit sees a
# header it does not include itself. Two PCHs: GCC refuses one built with
# -fPIC in a -fPIE unit (the static libraries are -fPIC, executables
# -fPIE). GCC only: clang would fail hard on a mismatched PCH, where GCC
# falls back to parsing the header (-Winvalid-pch warns).
#   -DPOSTTRAIN_PCH=OFF   compiles every unit from source, as before
option(POSTTRAIN_PCH "Precompile <torch/torch.h> (GCC)" ON)

function(posttrain_pch_setup)
  if(NOT POSTTRAIN_PCH OR NOT CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    return()
  endif()
  set(empty ${PROJECT_SOURCE_DIR}/cmake/pch_main.cc)
  add_library(posttrain_pch_pic OBJECT ${empty})
  set_target_properties(posttrain_pch_pic PROPERTIES
    POSITION_INDEPENDENT_CODE ON)
  add_executable(posttrain_pch_pie ${empty})
  foreach(t posttrain_pch_pic posttrain_pch_pie)
    target_include_directories(${t} BEFORE PRIVATE ${Protobuf_INCLUDE_DIRS})
    target_link_libraries(${t} PRIVATE ${TORCH_LIBRARIES})
    target_precompile_headers(${t} PRIVATE <torch/torch.h>)
  endforeach()
endfunction()

# Gives every target defined in `dir` and below whose sources include
# <torch/torch.h> the PCH, and marks its other sources to skip it.
function(posttrain_use_pch dir)
  if(NOT TARGET posttrain_pch_pic)
    return()
  endif()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub ${subdirs})
    posttrain_use_pch(${sub})
  endforeach()
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target ${targets})
    if(target MATCHES "^posttrain_pch_")
      continue()
    endif()
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      set(from posttrain_pch_pie)
    elseif(type STREQUAL "STATIC_LIBRARY")
      set(from posttrain_pch_pic)
    else()
      continue()
    endif()
    get_target_property(source_dir ${target} SOURCE_DIR)
    get_target_property(sources ${target} SOURCES)
    set(uses 0)
    foreach(s ${sources})
      if(NOT s MATCHES "\\.cc$")
        continue()
      endif()
      if(IS_ABSOLUTE ${s})
        set(path ${s})
      else()
        set(path ${source_dir}/${s})
      endif()
      set(hit "")
      if(EXISTS ${path})
        file(STRINGS ${path} hit REGEX "^#include <torch/torch.h>")
      endif()
      if(hit)
        set(uses 1)
      else()
        set_source_files_properties(${path} TARGET_DIRECTORY ${target}
          PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
      endif()
    endforeach()
    if(uses)
      target_precompile_headers(${target} REUSE_FROM ${from})
    endif()
  endforeach()
endfunction()
