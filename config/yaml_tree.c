/* libyaml's document API does the parsing; this keeps positions and gives nodes plain C
 * accessors so the loader never touches libyaml's id tables. */
#include "config/yaml_tree.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "config/diag.h"

struct pd_yaml_node {
    pd_yaml_kind kind;
    int line, column;
    char *text; /* scalars: owned; others: "" (not owned) */
    size_t text_len;
    /* lists: n children; mappings: n keys and n values, interleaved key, value */
    const pd_yaml_node **children;
    size_t n;
};

struct pd_yaml_tree {
    pd_yaml_node *nodes; /* one per libyaml node, same order */
    size_t n_nodes;
    const pd_yaml_node *root;
};

static char empty_text[] = "";

void pd_yaml_tree_free(pd_yaml_tree *tree)
{
    if (!tree)
        return;
    for (size_t i = 0; i < tree->n_nodes; i++) {
        if (tree->nodes[i].text != empty_text)
            free(tree->nodes[i].text);
        free(tree->nodes[i].children);
    }
    free(tree->nodes);
    free(tree);
}

/* Reader errors (bad UTF-8) carry a byte offset but no line; count it out. */
static void offset_position(const char *text, size_t len, size_t offset, int *line, int *column)
{
    int l = 1, c = 1;

    for (size_t i = 0; i < offset && i < len; i++) {
        if (text[i] == '\n') {
            l++;
            c = 1;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = l;
    *column = c;
}

static void report_parser_error(const yaml_parser_t *parser, const char *file, const char *text,
                                size_t len, pd_diag *diag)
{
    int line = (int)parser->problem_mark.line + 1;
    int column = (int)parser->problem_mark.column + 1;
    const char *problem = parser->problem ? parser->problem : "malformed document";

    if (parser->error == YAML_MEMORY_ERROR)
        problem = "out of memory";
    if (parser->error == YAML_READER_ERROR)
        offset_position(text, len, parser->problem_offset, &line, &column);
    pd_diag_add(diag, file, line, column, "syntax: %s", problem);
}

static bool is_null_scalar(const yaml_node_t *n)
{
    const char *v = (const char *)n->data.scalar.value;

    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    return !strcmp(v, "") || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

static int convert_node(pd_yaml_tree *tree, yaml_document_t *doc, size_t index)
{
    yaml_node_t *src = &doc->nodes.start[index];
    pd_yaml_node *dst = &tree->nodes[index];
    size_t n = 0;

    dst->line = (int)src->start_mark.line + 1;
    dst->column = (int)src->start_mark.column + 1;
    dst->text = empty_text;
    switch (src->type) {
    case YAML_SCALAR_NODE:
        dst->kind = is_null_scalar(src) ? PD_YAML_NULL : PD_YAML_SCALAR;
        dst->text_len = src->data.scalar.length;
        dst->text = malloc(dst->text_len + 1);
        if (!dst->text)
            return -ENOMEM;
        memcpy(dst->text, src->data.scalar.value, dst->text_len);
        dst->text[dst->text_len] = '\0';
        return 0;
    case YAML_SEQUENCE_NODE:
        dst->kind = PD_YAML_LIST;
        n = (size_t)(src->data.sequence.items.top - src->data.sequence.items.start);
        dst->children = calloc(n ? n : 1, sizeof(*dst->children));
        if (!dst->children)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++)
            dst->children[i] = &tree->nodes[src->data.sequence.items.start[i] - 1];
        dst->n = n;
        return 0;
    case YAML_MAPPING_NODE:
        dst->kind = PD_YAML_MAP;
        n = (size_t)(src->data.mapping.pairs.top - src->data.mapping.pairs.start);
        dst->children = calloc(n ? 2 * n : 1, sizeof(*dst->children));
        if (!dst->children)
            return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
            dst->children[2 * i] = &tree->nodes[src->data.mapping.pairs.start[i].key - 1];
            dst->children[2 * i + 1] = &tree->nodes[src->data.mapping.pairs.start[i].value - 1];
        }
        dst->n = n;
        return 0;
    default:
        dst->kind = PD_YAML_NULL;
        return 0;
    }
}

static pd_yaml_tree *tree_from_document(yaml_document_t *doc)
{
    pd_yaml_tree *tree = calloc(1, sizeof(*tree));
    size_t n = (size_t)(doc->nodes.top - doc->nodes.start);

    if (!tree)
        return NULL;
    if (n) {
        tree->nodes = calloc(n, sizeof(*tree->nodes));
        if (!tree->nodes)
            goto out_free;
        tree->n_nodes = n;
        for (size_t i = 0; i < n; i++)
            if (convert_node(tree, doc, i) < 0)
                goto out_free;
        /* libyaml numbers nodes from 1 and makes the root the first one. */
        tree->root = &tree->nodes[0];
    }
    return tree;

out_free:
    pd_yaml_tree_free(tree);
    return NULL;
}

pd_yaml_tree *pd_yaml_tree_parse(const char *file, const char *text, size_t len, pd_diag *diag,
                                 int *ret_errno)
{
    yaml_parser_t parser;
    yaml_document_t doc, extra;
    pd_yaml_tree *tree = NULL;
    int err = -EINVAL;

    if (!yaml_parser_initialize(&parser)) {
        err = -ENOMEM;
        goto out;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        report_parser_error(&parser, file, text, len, diag);
        goto out_parser;
    }
    /* A second document would be silently ignored by a reader that stops at the first. */
    if (!yaml_parser_load(&parser, &extra)) {
        report_parser_error(&parser, file, text, len, diag);
        goto out_doc;
    }
    if (yaml_document_get_root_node(&extra)) {
        pd_diag_add(diag, file, (int)extra.start_mark.line + 1, (int)extra.start_mark.column + 1,
                    "syntax: only one document is allowed");
        yaml_document_delete(&extra);
        goto out_doc;
    }
    yaml_document_delete(&extra);
    tree = tree_from_document(&doc);
    if (!tree)
        err = -ENOMEM;

out_doc:
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
out:
    if (!tree && ret_errno)
        *ret_errno = err;
    return tree;
}

const pd_yaml_node *pd_yaml_tree_root(const pd_yaml_tree *tree)
{
    return tree ? tree->root : NULL;
}

pd_yaml_kind pd_yaml_node_kind(const pd_yaml_node *node)
{
    return node ? node->kind : PD_YAML_NULL;
}

int pd_yaml_node_line(const pd_yaml_node *node)
{
    return node ? node->line : 1;
}

int pd_yaml_node_column(const pd_yaml_node *node)
{
    return node ? node->column : 1;
}

const char *pd_yaml_node_text(const pd_yaml_node *node)
{
    return node ? node->text : "";
}

size_t pd_yaml_node_text_len(const pd_yaml_node *node)
{
    return node ? node->text_len : 0;
}

size_t pd_yaml_node_size(const pd_yaml_node *node)
{
    return node && (node->kind == PD_YAML_LIST || node->kind == PD_YAML_MAP) ? node->n : 0;
}

const pd_yaml_node *pd_yaml_node_item(const pd_yaml_node *list, size_t i)
{
    if (!list || list->kind != PD_YAML_LIST || i >= list->n)
        return NULL;
    return list->children[i];
}

const pd_yaml_node *pd_yaml_node_key(const pd_yaml_node *map, size_t i)
{
    if (!map || map->kind != PD_YAML_MAP || i >= map->n)
        return NULL;
    return map->children[2 * i];
}

const pd_yaml_node *pd_yaml_node_value(const pd_yaml_node *map, size_t i)
{
    if (!map || map->kind != PD_YAML_MAP || i >= map->n)
        return NULL;
    return map->children[2 * i + 1];
}
