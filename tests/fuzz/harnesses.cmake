# The libFuzzer harnesses: name -> the libraries it links. Read by tests/fuzz/CMakeLists.txt
# (the clang build that makes them, FEDGE_FUZZ=ON) and tests/CMakeLists.txt (the `fuzz`
# ctest entries that run them briefly, from the default build).
set(FEDGE_FUZZ_HARNESSES
  payload assembler model language_model job_config sim_config data_files device_state
  secagg_wire)
set(FEDGE_FUZZ_DEPS_payload fedge_model)
set(FEDGE_FUZZ_DEPS_assembler fedge_model)
set(FEDGE_FUZZ_DEPS_model fedge_model)
set(FEDGE_FUZZ_DEPS_language_model fedge_client_device)
set(FEDGE_FUZZ_DEPS_job_config fedge_server)
set(FEDGE_FUZZ_DEPS_sim_config fedge_sim)
set(FEDGE_FUZZ_DEPS_data_files fedge_data)
set(FEDGE_FUZZ_DEPS_device_state fedge_client_device)
set(FEDGE_FUZZ_DEPS_secagg_wire fedge_secagg_wire)
