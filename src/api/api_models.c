/* GET /v1/models and GET /v1/models/{id}. */
#include "api/api_internal.h"

#include <stdlib.h>
#include <string.h>

static cJSON *model_object(const struct api_server *srv)
{
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "id", srv->model_id);
    cJSON_AddStringToObject(m, "object", "model");
    cJSON_AddNumberToObject(m, "created", (double)srv->model_created);
    cJSON_AddStringToObject(m, "owned_by", "taphouse");
    return m;
}

void api_models_list(struct api_server *srv, struct api_reply *reply)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "object", "list");
    cJSON *data = cJSON_AddArrayToObject(root, "data");
    cJSON_AddItemToArray(data, model_object(srv));
    reply->status = 200;
    reply->body = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
}

void api_models_get(struct api_server *srv, const char *id,
                    struct api_reply *reply)
{
    if (strcmp(id, srv->model_id) != 0) {
        api_reply_error(reply, 404, "invalid_request_error", "model",
                        "model_not_found",
                        "The model '%.200s' does not exist.", id);
        return;
    }
    cJSON *m = model_object(srv);
    reply->status = 200;
    reply->body = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
}
