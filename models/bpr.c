/* The BPR step of bpr.h, in one pass over the d coordinates after the margin. */
#include "models/bpr.h"

#include <math.h>

float pd_bpr_step(float *u, float *v_i, float *b_i, float *v_j, float *b_j, size_t d,
                  float weight, float rate, float l2)
{
    float x = *b_i - *b_j;

    for (size_t k = 0; k < d; k++)
        x += u[k] * (v_i[k] - v_j[k]);

    /* sigmoid(-x) without overflow at either end */
    float g = weight * (x >= 0 ? expf(-x) / (1.0f + expf(-x)) : 1.0f / (1.0f + expf(x)));
    float keep = 1.0f - rate * l2;

    for (size_t k = 0; k < d; k++) {
        float uk = u[k], vik = v_i[k], vjk = v_j[k];

        u[k] = keep * uk + rate * g * (vik - vjk);
        v_i[k] = keep * vik + rate * g * uk;
        v_j[k] = keep * vjk - rate * g * uk;
    }
    *b_i = keep * *b_i + rate * g;
    *b_j = keep * *b_j - rate * g;
    return x;
}
