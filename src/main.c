#include <stdio.h>
int main(void)
{
    puts("estuary " ESTUARY_VERSION);
    return 0;
}
