/* A parsed YAML document as a read-only tree of nodes that keep their position in the file.
 * It wraps libyaml and owns every node; aliases become shared nodes (never copies), so a hostile
 * file cannot make the tree grow beyond its own size. Syntax errors go to a pd_diag. */
#ifndef PD_CONFIG_YAML_TREE_H
#define PD_CONFIG_YAML_TREE_H

#include <stddef.h>

#include "config/config.h"

typedef struct pd_yaml_tree pd_yaml_tree;
typedef struct pd_yaml_node pd_yaml_node;

typedef enum pd_yaml_kind {
    PD_YAML_NULL, /* an empty plain scalar, "~" or "null": a key with nothing after it */
    PD_YAML_SCALAR,
    PD_YAML_LIST,
    PD_YAML_MAP,
} pd_yaml_kind;

/* Parses one document. Returns NULL on a syntax error (appended to diag as
 * "file:line:column: error: syntax: problem") or when out of memory (ret_errno says which:
 * -EINVAL or -ENOMEM). file is used in messages only. */
pd_yaml_tree *pd_yaml_tree_parse(const char *file, const char *text, size_t len, pd_diag *diag,
                                 int *ret_errno);
void pd_yaml_tree_free(pd_yaml_tree *tree);

/* NULL when the document is empty. */
const pd_yaml_node *pd_yaml_tree_root(const pd_yaml_tree *tree);

pd_yaml_kind pd_yaml_node_kind(const pd_yaml_node *node);
/* 1-based position of the node's first character. */
int pd_yaml_node_line(const pd_yaml_node *node);
int pd_yaml_node_column(const pd_yaml_node *node);
/* Scalar text, NUL-terminated ("" for other kinds). */
const char *pd_yaml_node_text(const pd_yaml_node *node);
/* Length of the scalar text, which may hold a NUL written as "\0". */
size_t pd_yaml_node_text_len(const pd_yaml_node *node);
/* Items of a list or pairs of a mapping; 0 for scalars. */
size_t pd_yaml_node_size(const pd_yaml_node *node);
const pd_yaml_node *pd_yaml_node_item(const pd_yaml_node *list, size_t i);
const pd_yaml_node *pd_yaml_node_key(const pd_yaml_node *map, size_t i);
const pd_yaml_node *pd_yaml_node_value(const pd_yaml_node *map, size_t i);

#endif
