// The translation unit of the PCH targets (cmake/posttrain_pch.cmake).
int main() { return 0; }
