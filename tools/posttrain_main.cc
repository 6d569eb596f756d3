// posttrain: the command-line tool (tools/cli.h has the subcommands and
// the exit codes).
#include "tools/cli.h"

int main(int argc, char** argv) { return posttrain::PosttrainMain(argc, argv); }
