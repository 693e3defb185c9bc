/* The subcommands of propensityd, one file each (cmd_<name>.c), dispatched from main.c. */
#ifndef PD_COMMANDS_H
#define PD_COMMANDS_H

int pd_cmd_run(int argc, char **argv);
int pd_cmd_check(int argc, char **argv);
int pd_cmd_replay(int argc, char **argv);

#endif
