# posttrain_component(NAME <name> SOURCES ... [PROTOS ...] [HEADERS ...]
#                     [DEPS ...])
# Defines the static library posttrain_<name>, its alias posttrain::<name>,
# generates C++ for PROTOS, and installs the library, HEADERS and the
# generated headers under include/posttrain/<name>/.
function(posttrain_component)
  cmake_parse_arguments(PC "" "NAME" "SOURCES;PROTOS;HEADERS;DEPS" ${ARGN})
  set(target posttrain_${PC_NAME})
  add_library(${target} STATIC ${PC_SOURCES})
  add_library(posttrain::${PC_NAME} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${PC_NAME})
  target_compile_options(${target} PRIVATE -Wall -Wextra)
  # Protobuf's include directory goes before Torch's: a pip LibTorch ships
  # its own, incompatible google/protobuf headers.
  target_include_directories(${target} BEFORE PUBLIC
    $<BUILD_INTERFACE:${Protobuf_INCLUDE_DIRS}>)
  target_include_directories(${target} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>
    $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/posttrain>)
  target_link_libraries(${target} PUBLIC ${PC_DEPS})
  if(PC_PROTOS)
    target_link_libraries(${target} PUBLIC ${Protobuf_LIBRARIES})
    foreach(proto ${PC_PROTOS})
      get_filename_component(stem ${proto} NAME_WE)
      set(out ${PROJECT_BINARY_DIR}/${PC_NAME}/${stem})
      # Paths relative to the project root, so generated code includes
      # "common/model_spec.pb.h" like our own headers.
      add_custom_command(
        OUTPUT ${out}.pb.h ${out}.pb.cc
        COMMAND ${Protobuf_PROTOC_EXECUTABLE}
                --cpp_out=${PROJECT_BINARY_DIR} -I${PROJECT_SOURCE_DIR}
                ${PROJECT_SOURCE_DIR}/${PC_NAME}/${proto}
        DEPENDS ${PROJECT_SOURCE_DIR}/${PC_NAME}/${proto}
                ${Protobuf_PROTOC_EXECUTABLE}
        COMMENT "protoc ${PC_NAME}/${proto}")
      target_sources(${target} PRIVATE ${out}.pb.cc ${out}.pb.h)
      install(FILES ${PROJECT_BINARY_DIR}/${PC_NAME}/${stem}.pb.h
              DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/posttrain/${PC_NAME})
    endforeach()
  endif()
  install(FILES ${PC_HEADERS}
          DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/posttrain/${PC_NAME})
  install(TARGETS ${target} EXPORT posttrainTargets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
endfunction()
